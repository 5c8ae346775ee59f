#!/usr/bin/env python3
"""Wall-clock timings of the official XINC code (PyTorch, on the CPU) for the side-by-side
benchmark `scripts/bench-official.sh`: the calls that xinc's criterion benches
(`benches/canvas.rs`, `benches/nerv.rs`) re-implement, on the golden models
(`$XINC_GOLDEN/ffn_0005`, `$XINC_GOLDEN/nerv_synth`, see their READMEs).

One process measures one thread count: `torch.set_num_threads(N)`; the caller also sets
`OMP_NUM_THREADS` / `MKL_NUM_THREADS` to N before Python starts. `--device cuda` runs the same
calls on the GPU (`scripts/bench-gpu.sh`): `torch.set_default_device("cuda")` before the models are
built, so the official code's own `torch.zeros` maps and box filters live on the GPU too, and
every timed call ends with `torch.cuda.synchronize()`; its peak memory is
`torch.cuda.max_memory_allocated()` of the warm-up call. On the GPU, convolutions and matrix
products run in full f32 (as xinc's) unless `--tf32` allows TensorFloat-32: with TF32 (PyTorch's
default for cuDNN convolutions) the official block-1 call fails its own sanity check (atol 1e-4).
A call that raises is recorded with its error and the others still run. Method (as
`$XINC_GOLDEN/TIMINGS.md`): one untimed warm-up call, then the median of `--repeats` timed calls
(`time.perf_counter()`), the output deleted and `gc.collect()` between calls, outside the timed
region. Training steps: `--train-warmup` untimed steps, then `--repeats` blocks of
`--train-steps` steps; the reported time is the median block divided by its step count.

Peak memory: before each warm-up call the kernel's high-water mark of this process is reset
(`echo 5 > /proc/self/clear_refs`) and read back afterwards (`VmHWM` of `/proc/self/status`), so
every call gets its own peak (the whole process: interpreter, torch, models and the call's
tensors) and its increase over the resident size before the call. Where the reset is refused,
the monotonic `ru_maxrss` is reported instead and marked as such.

Calls (the official entry points, as `image_inr/generate_mlp_contribs_for_clustering.py` and
`HNeRV/generate_nerv_contribs_for_clustering.py` call them):

- `ffn_forward`: `image_inr/models/ffn.py:ffn` (the training model) on the 128x256 coordinate
  grid, `torch.no_grad()`; `ffn_forward_analysis`: `image_inr/model_all_analysis.py:ffn` (returns
  the intermediate results; evaluates the network twice), `no_grad`;
- `ffn_maps`: `get_mlp_mappings.ComputeMLPContributions(...).compute_all_layer_mappings()`;
- `nerv_forward`: `HNeRV/model_all.py:HNeRV` (training model), frame 0, `no_grad`;
  `nerv_forward_analysis`: `HNeRV/model_all_analysis.py:HNeRV`, `no_grad`;
- `nerv_head`, `nerv_block3`, `nerv_block2`, `nerv_block1`: `get_mappings.ComputeContributions`
  `compute_head_mappings`, `compute_last_nerv_block_mappings`, `compute_nerv_block_2_mappings`,
  `compute_nerv_block_1_mappings` (frame 0; blocks return the maps and the pre-GELU maps);
- `nerv_train_step`: one step of `train_nerv_all.py`'s loop on `model_all.HNeRV` with the
  paper's flags: `hnerv_utils.adjust_lr` (cosine_0.1_1_0.1), `TransformInput`, forward of a
  batch of 2 frames, `hnerv_utils.loss_fn(..., 'L2')`, `zero_grad`, `backward`, Adam
  (lr 1e-3, betas 0.9/0.999) `step`;
- `ffn_train_step`: one step of the Lightning module's loop on `models/ffn.py:ffn`: forward of
  all 32,768 coordinates (full batch, as `batch_size 1` = one image), MSE (`losses.mse`, weight 1,
  is `F.mse_loss`; taken from torch directly because `losses.py` imports torchmetrics),
  `zero_grad`, `backward`, Adam (lr 9e-4, betas 0.9/0.999, `configure_optimizers`) `step`.
  Lightning's own per-step work (logging, PSNR for the progress bar) is not included.

Targets of the training steps are random frames in [0, 1] (fixed seed); the golden weights are
the starting point (random seeded weights if the golden folder is absent: the timings do not
depend on the values).

The official modules import packages that none of these calls use (decord, matplotlib, timm,
torchvision, kornia, pycocotools, lightning, pytorch_msssim, cv2, PIL, omegaconf, easydict,
compress_pickle); stand-ins replace them before the import, so only torch, numpy, einops and
safetensors are needed. `image_inr/model_all_analysis.py` and `HNeRV/model_all_analysis.py`
share a module name and are loaded from their files under distinct names.

Usage:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/reference/bench_official.py \
        --official /tmp/xinc-official --golden ../shared/golden --threads 1 \
        --out target/bench-official/official-1t.json
"""

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import official_stubs  # noqa: E402  (stand-ins for the official imports)

H, W = 128, 256
NERV_FRAMES = 8  # the golden synthetic video; t = idx / 8

CALLS = ["ffn_forward", "ffn_forward_analysis", "ffn_maps", "ffn_train_step",
         "nerv_forward", "nerv_forward_analysis", "nerv_head", "nerv_block3", "nerv_block2",
         "nerv_block1", "nerv_train_step"]


# ------------------------------------------------------------------ official imports


def load_file_as(path, name):
    """Import one official source file under a module name of our choosing."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class Official:
    """The official modules used here."""

    def __init__(self, root):
        root = Path(root)
        official_stubs.stub_unused_imports(everything=True)
        inr, hnerv = root / "image_inr", root / "HNeRV"
        for d in (inr, hnerv):
            if not d.is_dir():
                sys.exit(f"bench_official.py: {d} not found (is --official a checkout of "
                         "github:namithap10/xinc?)")
        # image_inr's modules import the packages `models` and `utils` from their folder.
        sys.path.insert(0, str(inr))
        self.inr_analysis = load_file_as(inr / "model_all_analysis.py", "inr_model_all_analysis")
        self.inr_ffn = importlib.import_module("models.ffn")  # imported by the line above
        self.inr_data = importlib.import_module("utils.data_process")
        self.mlp_mappings = load_file_as(inr / "get_mlp_mappings.py", "inr_get_mlp_mappings")
        self.nerv_analysis = load_file_as(hnerv / "model_all_analysis.py", "hnerv_model_all_analysis")
        self.nerv_model = load_file_as(hnerv / "model_all.py", "hnerv_model_all")
        self.nerv_utils = load_file_as(hnerv / "hnerv_utils.py", "hnerv_utils")
        self.nerv_mappings = load_file_as(hnerv / "get_mappings.py", "hnerv_get_mappings")


# ------------------------------------------------------------------ models and inputs


def ns(**kw):
    return types.SimpleNamespace(**kw)


def ffn_cfg():
    """The attributes of `exp_config.yaml` (ffn_0005) that the FFN modules read."""
    return ns(
        data=ns(dim_in=2, dim_out=3, data_shape=[H, W], patch_shape=None,
                coord_normalize_range=[-1, 1], coord_separate_norm=False, coord_split=False,
                coord_grid_mapping=False, data_range=[0, 1]),
        network=ns(model_name="ffn", layer_size=104, num_layers=3, dim_in=2, dim_out=3,
                   final_act=None, activation="relu", use_bias=True, sidelength=256,
                   pos_encoding=ns(type="fourier", num_frequencies=None,
                                   fourier_mapping_size=104, fourier_noise_scale=10.0)),
        trainer=ns(lr=0.0009, optimizer=ns(betas=[0.9, 0.999])),
    )


def nerv_args(fc_dim):
    """The paper's NeRV flags (the golden nerv_synth args) as the HNeRV classes read them."""
    return ns(embed="pe_1.25_80", ks="0_3_3", num_blks="1_1", enc_dim="64_16", enc_strds=[],
              dec_strds=[4, 2, 2], fc_dim=fc_dim, fc_hw="8_16", norm="none", act="gelu",
              reduce=1.2, lower_width=6, conv_type=["convnext", "pshuffel"], out_bias="tanh",
              lr=1e-3, lr_type="cosine_0.1_1_0.1", loss="L2", vid="synth8", epochs=100)


def load_weights(model, path):
    if path is None:
        return "random (seeded; golden folder absent)"
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(path)), strict=True)
    return str(path)


def golden_file(golden, sub, name):
    if golden is None:
        return None
    p = Path(golden) / sub / name
    return p if p.is_file() else None


def nerv_fc_dim(golden):
    meta = golden_file(golden, "nerv_synth", "meta.json")
    if meta is not None:
        return int(json.loads(meta.read_text())["args"]["fc_dim"])
    return 37  # train_nerv_all.py's value for these flags (also hard-coded by the official analysis)


def golden_check(golden, sub, name, compute):
    """Max abs difference of the model's output from the golden one (proves the golden model
    is the one being timed)."""
    path = golden_file(golden, sub, "io.safetensors")
    if path is None:
        return None
    from safetensors.torch import load_file
    with torch.no_grad():
        diff = (compute().cpu() - load_file(str(path))[name]).abs().max().item()
    return {"tensor": f"{sub}/io.safetensors:{name}", "max_abs_diff": diff}


# ------------------------------------------------------------------ measurement


def mem_status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024.0  # MiB
    return out


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Bench:
    def __init__(self, repeats, log, device):
        self.repeats = repeats
        self.log = log
        self.results = {}
        self.cuda = device == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _peak_begin(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        ok = reset_peak()
        before = mem_status().get("VmRSS")
        return ok, before

    def _peak_end(self, ok, before):
        self.sync()
        gpu = {"gpu_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20} if self.cuda else {}
        if ok:
            peak = mem_status().get("VmHWM")
            kind = "VmHWM after clear_refs reset"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            kind = "ru_maxrss (process high-water mark so far)"
        return {"peak_rss_mib": peak, "rss_before_mib": before,
                "peak_increase_mib": None if peak is None or before is None else peak - before,
                "peak_kind": kind, **gpu}

    def _timed(self, repeats, run):
        """`repeats` timed runs of `run`, each synchronised, its result freed and
        `gc.collect()` run outside the timed region: (wall seconds, CPU seconds)."""
        wall, cpu = [], []
        for _ in range(repeats):
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = run()
            self.sync()
            t1 = time.perf_counter()
            c1 = time.process_time()
            del out
            gc.collect()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
        return wall, cpu

    def call(self, name, fn, what, repeats=None):
        """One untimed warm-up call (its peak memory recorded), then `repeats` timed calls."""
        repeats = self.repeats if repeats is None else repeats
        self.log(f"  {name}: warm-up")
        ok, before = self._peak_begin()
        try:
            out = fn()
        except Exception as e:  # recorded; the other calls still run
            self.results[name] = {"error": f"{type(e).__name__}: {e}", "what": what}
            self.log(f"  {name}: FAILED: {type(e).__name__}: {e}")
            return
        mem = self._peak_end(ok, before)
        del out
        gc.collect()
        runs, cpu = self._timed(repeats, fn)
        self.results[name] = {"median_s": statistics.median(runs), "runs_s": runs,
                              "cpu_s": cpu, "repeats": repeats, "what": what, **mem}
        self.log(f"  {name}: median {statistics.median(runs):.4f} s  runs "
                 f"{[round(r, 4) for r in runs]}  peak RSS {mem['peak_rss_mib']:.0f} MiB")

    def steps(self, name, step, what, warmup, per_block):
        """`warmup` untimed steps (peak memory recorded), then `repeats` timed blocks of
        `per_block` steps; the time per step is the median block / per_block."""
        self.log(f"  {name}: {warmup} warm-up steps")
        ok, before = self._peak_begin()
        for _ in range(warmup):
            step()
        mem = self._peak_end(ok, before)
        gc.collect()
        blocks, cpu = self._timed(self.repeats, lambda: [step() for _ in range(per_block)])
        med = statistics.median(blocks) / per_block
        self.results[name] = {"median_s": med, "block_s": blocks, "cpu_s": cpu,
                              "steps_per_block": per_block, "repeats": self.repeats,
                              "warmup_steps": warmup, "what": what, **mem}
        self.log(f"  {name}: median {med:.4f} s per step  blocks "
                 f"{[round(b, 3) for b in blocks]}  peak RSS {mem['peak_rss_mib']:.0f} MiB")


class StayOnDevice(torch.Tensor):
    """A tensor whose `.cpu()` leaves it where it is."""

    def cpu(self, *args, **kwargs):
        return self


def keep_sanity_checks_on_device(contrib):
    """The official block 2 and block 1 sanity checks compare a map on the model's device with
    `block_input.cpu()`, which fails on a GPU. Their block input is handed over as a
    `StayOnDevice` view, so the same check runs on the GPU."""
    for name in ("blk_2_sanity_check", "blk_1_sanity_check"):
        check = getattr(contrib, name)

        def on_device(maps, block_input, stride, check=check):
            return check(maps, block_input.as_subclass(StayOnDevice), stride)

        setattr(contrib, name, on_device)


# ------------------------------------------------------------------ the benchmarks


def bench_forwards(bench, wanted, x, calls):
    """Times `model(x)` under `torch.no_grad()` for each wanted `(name, model, what)`."""
    for name, model, what in calls:
        if name in wanted:
            def forward(model=model):
                with torch.no_grad():
                    return model(x)
            bench.call(name, forward, what)


def bench_ffn(off, golden, bench, wanted, a):
    weights = golden_file(golden, "ffn_0005", "weights.safetensors")
    cfg = ffn_cfg()
    torch.manual_seed(0)
    analysis = off.inr_analysis.ffn(cfg).eval()
    src = load_weights(analysis, weights)
    torch.manual_seed(0)
    plain = off.inr_ffn.ffn(cfg).eval()
    load_weights(plain, weights)
    proc = off.inr_data.DataProcessor(cfg.data, device=a.device)
    coords = proc.get_coordinates(data_shape=[1, 3, H, W], patch_shape=None, split=False,
                                  normalize_range=cfg.data.coord_normalize_range)
    info = {"weights": src, "coords": list(coords.shape),
            "check": golden_check(golden, "ffn_0005", "predicted",
                                  lambda: plain(coords)["predicted"])}

    bench_forwards(bench, wanted, coords, [
        ("ffn_forward", plain, "models/ffn.py:ffn forward, 32768 coordinates, no_grad"),
        ("ffn_forward_analysis", analysis,
         "model_all_analysis.py:ffn forward (with intermediate results), no_grad")])
    if "ffn_maps" in wanted:
        with torch.no_grad():
            inter = analysis(coords)["intermediate_results"]
        contrib = off.mlp_mappings.ComputeMLPContributions(analysis, inter, (H, W))
        bench.call("ffn_maps", contrib.compute_all_layer_mappings,
                   "ComputeMLPContributions.compute_all_layer_mappings()")
        del contrib, inter
        gc.collect()
    if "ffn_train_step" in wanted:
        torch.manual_seed(0)
        model = off.inr_ffn.ffn(cfg)
        load_weights(model, weights)
        model.train()
        gen = torch.Generator(device=a.device).manual_seed(1234)
        target = torch.rand(H * W, 3, generator=gen)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.trainer.lr,
                               betas=tuple(cfg.trainer.optimizer.betas))

        def step():
            pred = model(coords)["predicted"]
            loss = F.mse_loss(target, pred.squeeze())
            opt.zero_grad()
            loss.backward()
            opt.step()

        bench.steps("ffn_train_step", step,
                    "models/ffn.py:ffn, full batch 32768 px, MSE, Adam lr 9e-4 (0.9, 0.999)",
                    a.train_warmup, a.ffn_train_steps)
    return info


def bench_nerv(off, golden, bench, wanted, a):
    weights = golden_file(golden, "nerv_synth", "weights.safetensors")
    args = nerv_args(nerv_fc_dim(golden))
    torch.manual_seed(0)
    analysis = off.nerv_analysis.HNeRV(args).eval()
    src = load_weights(analysis, weights)
    torch.manual_seed(0)
    plain = off.nerv_model.HNeRV(args).eval()
    load_weights(plain, weights)
    norm_idx = torch.tensor([0.0], dtype=torch.float64)  # frame 0, as the DataLoader collates it
    info = {"weights": src, "fc_dim": args.fc_dim,
            "params": sum(p.numel() for p in plain.parameters()),
            "check": golden_check(golden, "nerv_synth", "frame0.img_out",
                                  lambda: plain(norm_idx)[0])}

    bench_forwards(bench, wanted, norm_idx, [
        ("nerv_forward", plain, "model_all.py:HNeRV forward, frame 0, no_grad"),
        ("nerv_forward_analysis", analysis,
         "model_all_analysis.py:HNeRV forward, frame 0, no_grad")])
    maps = [("nerv_head", "compute_head_mappings", bench.repeats),
            ("nerv_block3", "compute_last_nerv_block_mappings", bench.repeats),
            ("nerv_block2", "compute_nerv_block_2_mappings", bench.repeats),
            ("nerv_block1", "compute_nerv_block_1_mappings", a.block1_repeats)]
    if any(name in wanted for name, _, _ in maps):
        with torch.no_grad():
            _, _, _, decoder_results, img_out = analysis(norm_idx)
        contrib = off.nerv_mappings.ComputeContributions(analysis, args, decoder_results,
                                                         img_out.detach().clone()[0])
        if a.device == "cuda":
            keep_sanity_checks_on_device(contrib)
        for name, method, repeats in maps:
            if name in wanted:
                bench.call(name, getattr(contrib, method), f"ComputeContributions.{method}()",
                           repeats=repeats)
        del contrib, decoder_results, img_out
        gc.collect()
    if "nerv_train_step" in wanted:
        torch.manual_seed(0)
        model = off.nerv_model.HNeRV(args)
        load_weights(model, weights)
        model.train()
        gen = torch.Generator(device=a.device).manual_seed(1234)
        frames = torch.rand(NERV_FRAMES, 3, H, W, generator=gen)
        opt = torch.optim.Adam(model.parameters(), weight_decay=0.0)  # as train_nerv_all.py
        transform = off.nerv_model.TransformInput(args)
        steps_per_epoch = NERV_FRAMES // 2
        counter = [0]

        def step():
            i = counter[0] % steps_per_epoch
            epoch = (counter[0] // steps_per_epoch) % args.epochs
            counter[0] += 1
            idx = torch.tensor([2 * i, 2 * i + 1])
            cur_input = idx.double() / NERV_FRAMES
            _, img_gt, inpaint_mask = transform(frames[idx])
            off.nerv_utils.adjust_lr(opt, (epoch + i / steps_per_epoch) / args.epochs, args)
            img_out, _, _ = model(cur_input)
            loss = off.nerv_utils.loss_fn(img_out * inpaint_mask, img_gt * inpaint_mask, args.loss)
            opt.zero_grad()
            loss.backward()
            opt.step()

        bench.steps("nerv_train_step", step,
                    "model_all.py:HNeRV, batch 2 of 128x256, loss_fn L2, Adam lr 1e-3 "
                    "(0.9, 0.999), adjust_lr cosine_0.1_1_0.1",
                    a.train_warmup, a.nerv_train_steps)
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="a checkout of github:namithap10/xinc")
    p.add_argument("--golden", default=None,
                   help="the golden folder (ffn_0005/, nerv_synth/); absent: seeded random weights")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the models and the official maps live (cuda: the default device)")
    p.add_argument("--tf32", action="store_true",
                   help="cuda: allow TensorFloat-32 in convolutions and matrix products")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--block1-repeats", type=int, default=3)
    p.add_argument("--train-warmup", type=int, default=3)
    p.add_argument("--ffn-train-steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--nerv-train-steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--only", default=",".join(CALLS),
                   help=f"comma-separated subset of: {','.join(CALLS)}")
    p.add_argument("--skip", default="", help="comma-separated calls to leave out")
    p.add_argument("--commit", default=None, help="the official commit, recorded in the output")
    p.add_argument("--out", required=True, help="JSON file to write")
    a = p.parse_args()

    wanted = [c for c in a.only.split(",") if c]
    unknown = [c for c in wanted + [c for c in a.skip.split(",") if c] if c not in CALLS]
    if unknown:
        sys.exit(f"bench_official.py: unknown call(s) {unknown}; known: {CALLS}")
    wanted = [c for c in wanted if c not in a.skip.split(",")]
    golden = a.golden if a.golden and Path(a.golden).is_dir() else None

    def log(msg):
        tag = " tf32" if a.tf32 else ""
        print(f"[official {a.device}{tag} {a.threads}t] {msg}", flush=True)

    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench_official.py: --device cuda, but torch sees no GPU")
        torch.set_default_device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
    off = Official(a.official)
    bench = Bench(a.repeats, log, a.device)
    load0 = os.getloadavg()
    t0 = time.time()
    log(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, calls: {','.join(wanted)}")
    ffn_info = bench_ffn(off, golden, bench, wanted, a) if any(c.startswith("ffn") for c in wanted) else None
    nerv_info = bench_nerv(off, golden, bench, wanted, a) if any(c.startswith("nerv") for c in wanted) else None
    result = {
        "threads": a.threads,
        "device": a.device,
        "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None,
        "tf32": a.tf32 if a.device == "cuda" else None,
        "torch_num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_parallel_info": torch.__config__.parallel_info().splitlines()[:12],
        "env": {k: os.environ.get(k) for k in
                ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME"]},
        "official": str(a.official),
        "official_commit": a.commit,
        "golden": golden,
        "ffn": ffn_info,
        "nerv": nerv_info,
        "method": "1 untimed warm-up call, then the median of `repeats` timed calls "
                  "(time.perf_counter), gc.collect() between calls; training: warm-up steps, "
                  "median block of steps / steps per block",
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)),
        "wall_s": time.time() - t0,
        "calls": bench.results,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {a.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
