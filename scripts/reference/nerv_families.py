#!/usr/bin/env python3
"""Reference outputs of the official HNeRV code (`HNeRV/model_all.py`, class `HNeRV`) for the
NeRV family tests of xinc (`tests/nerv_reference.rs`): one small model per case, trained for a
few hundred seeded steps with the official loss and learning-rate schedule, then its checkpoint
(`model_best.pth`, the dictionary `train_nerv_all.py` saves), its flags (`args.txt`), the frames
(`frames/*.png`), every decoder activation of every frame and the official metrics.

Usage (torch on the CPU; nothing else of the official requirements is needed):

    git -C <mirror> archive HEAD | tar -x -C /tmp/xinc-official    # the official code
    python3 -m venv venv && venv/bin/pip install torch numpy safetensors pytorch_msssim pillow
    venv/bin/python scripts/reference/nerv_families.py --official /tmp/xinc-official \
        --data data/cityscapes_vps/vps_subset/val/0005/images \
        --out tests/fixtures/reference/nerv_families

The official module imports packages that the model classes never use (decord, matplotlib,
timm, torchvision, kornia, pycocotools); they are replaced by stand-ins before the import (timm's
`trunc_normal_` by torch's own, `DropPath` by the identity: the drop rate is 0). Official bug
worked around: `ActivationLayer('sin')` returns the `Sin` class instead of a layer, so the model
cannot run; the `sin` case patches it to return an instance.

`fc_dim` follows `train_nerv_all.py` (a quadratic in the channel count, from the parameter
budget), computed here from its definition; `train_nerv_all.py` itself is a command-line program
and cannot be imported.
"""

import argparse
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from official_stubs import stub_unused_imports  # noqa: E402,F401  (also compression.py's)


# Small models of every family, 4 frames of 32×64 (the flags of train_nerv_all.py).
COMMON = "--ks 0_3_3 --reduce 1.2 --lower_width 4 --modelsize 0.015"
CASES = {
    "nerv_pshuffel_gelu": f"--embed pe_1.25_16 --fc_hw 2_4 --dec_strds 4 2 2 {COMMON} "
                          "--conv_type convnext pshuffel --act gelu --norm none --num_blks 1_1 "
                          "--out_bias tanh --loss L2",
    "nerv_conv_relu_bn": "--embed pe_1.25_16 --fc_hw 2_4 --dec_strds 4 2 2 --ks 0_2_2 --reduce 1.2 "
                         "--lower_width 4 --modelsize 0.015 --conv_type convnext conv --act relu "
                         "--norm bn --num_blks 1_2 --out_bias sigmoid --loss Fusion6",
    # Instance norm needs HNeRV: NeRV's stem output is 1×1, which the official code cannot
    # normalise (PyTorch refuses it in training). An encoder stride of 16 leaves a 2×4
    # embedding, 8 values per plane for the stem's instance norm.
    "hnerv_interp_leaky01_in": f"--embed --enc_strds 4 2 2 --enc_dim 16_4 --dec_strds 4 2 2 "
                               f"{COMMON} --conv_type convnext interpolate --act leaky01 "
                               "--norm in --num_blks 1_1 --out_bias 0.5 --resize_list 32_64 "
                               "--loss L1",
    "hnerv": f"--embed --enc_strds 4 2 2 2 --enc_dim 16_4 --dec_strds 4 2 2 {COMMON} "
             "--conv_type convnext pshuffel --act gelu --norm none --num_blks 1_1 "
             "--out_bias tanh --resize_list 32_64 --loss Fusion6",
}
# Untrained (seeded initialisation), forward only: the remaining activations.
ACTS = ["leaky", "relu6", "swish", "softplus", "hardswish", "sin"]
ACT_ARGS = f"--embed pe_1.25_16 --fc_hw 2_4 --dec_strds 4 2 2 {COMMON} --conv_type convnext " \
           "pshuffel --norm none --num_blks 1_1 --out_bias tanh --loss L2"

FRAMES, H, W = 4, 32, 64
STEPS = 300


def flags(text):
    """The official flags as the attributes the HNeRV class reads."""
    p = argparse.ArgumentParser()
    p.add_argument("--embed", type=str, default="", nargs="?", const="")
    p.add_argument("--ks", type=str, default="0_3_3")
    p.add_argument("--enc_strds", type=int, nargs="+", default=[])
    p.add_argument("--enc_dim", type=str, default="64_16")
    p.add_argument("--modelsize", type=float, default=1.5)
    p.add_argument("--fc_hw", type=str, default="9_16")
    p.add_argument("--reduce", type=float, default=1.2)
    p.add_argument("--lower_width", type=int, default=32)
    p.add_argument("--dec_strds", type=int, nargs="+", default=[5, 3, 2, 2, 2])
    p.add_argument("--num_blks", type=str, default="1_1")
    p.add_argument("--conv_type", type=str, nargs="+", default=["convnext", "pshuffel"])
    p.add_argument("--norm", type=str, default="none")
    p.add_argument("--act", type=str, default="gelu")
    p.add_argument("--out_bias", type=str, default="tanh")
    p.add_argument("--loss", type=str, default="Fusion6")
    p.add_argument("--resize_list", type=str, default="-1")
    return p.parse_args(text.split())


def fc_dim(a, frames, final_size):
    """`fc_dim` as train_nerv_all.py defines it: the largest root of
    q·x² + l·x − (budget − embedding parameters), q from the decoder's strides and kernels."""
    if a.enc_strds:
        stride = int(np.prod(a.enc_strds))
        cells = final_size / stride ** 2
        dim1, ratio = [float(x) for x in a.enc_dim.split("_")]
        embed_dim = int(ratio * a.modelsize * 1e6 / frames / cells) if ratio < 1 else int(ratio)
        embed_params = embed_dim / stride ** 2 * final_size * frames
        a.enc_dim = f"{int(dim1)}_{embed_dim}"
        fc_params = (stride // int(np.prod(a.dec_strds))) ** 2 * 9
    else:
        embed_params = 0
        embed_dim = int(a.embed.split("_")[-1]) * 2
        fc_params = int(np.prod([int(x) for x in a.fc_hw.split("_")]))
    r = 1.0 / a.reduce
    k1, k2 = [int(x) for x in a.ks.split("_")[1:]]
    q = r * sum(r ** (2 * i) * s ** 2 * min(2 * i + k1, k2) ** 2 for i, s in enumerate(a.dec_strds))
    lin = embed_dim * fc_params
    const = -(a.modelsize * 1e6 - embed_params)
    return int(max(np.roots([q, lin, const]).real))


def load_frames(folder):
    """The first FRAMES frames, resized as the official loader does (bicubic), then rounded to
    8 bits so that the PNGs written for the Rust side hold exactly what the model learned."""
    files = sorted(Path(folder).glob("*.png"))[:FRAMES]
    out = []
    for f in files:
        img = torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1) / 255.0
        img = F.interpolate(img[None], size=(H, W), mode="bicubic")[0]
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return out


def build(official, text, frames):
    sys.path.insert(0, str(Path(official) / "HNeRV"))
    import model_all  # noqa: E402  (the official module)
    a = flags(text)
    a.fc_dim = fc_dim(a, frames, H * W)
    if a.act == "sin":
        make = model_all.ActivationLayer
        model_all.ActivationLayer = lambda t: model_all.Sin() if t == "sin" else make(t)
    return model_all.HNeRV(a), a


def model_input(model, a, idx, frames):
    if a.enc_strds:
        return frames[idx]
    return idx.double() / FRAMES


def train(model, a, frames, official):
    sys.path.insert(0, str(Path(official) / "HNeRV"))
    import hnerv_utils  # noqa: E402  (the official loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(1)
    model.train()
    for step in range(STEPS):
        u = step / STEPS  # the official cosine_0.1_1_0.1 schedule, per iteration
        mult = 0.1 + 0.9 * u / 0.1 if u < 0.1 else 0.5 * (1 + math.cos(math.pi * (u - 0.1) / 0.9))
        for g in opt.param_groups:
            g["lr"] = 1e-3 * mult
        idx = torch.randperm(FRAMES, generator=gen)[:2]
        out, _, _ = model(model_input(model, a, idx, frames))
        loss = hnerv_utils.loss_fn(out, frames[idx], a.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def write_case(out, name, text, model, a, frames, official, loss, trained=True):
    """The case's files. Kept small: every frame's output (for the metrics), the decoder's
    activations of frame 1 only; the untrained activation cases keep frame 1's output and no
    frames (their PSNR means nothing)."""
    sys.path.insert(0, str(Path(official) / "HNeRV"))
    import hnerv_utils  # noqa: E402
    d = Path(out) / name
    d.mkdir(parents=True, exist_ok=True)
    if trained:
        (d / "frames").mkdir(exist_ok=True)
        for i in range(FRAMES):
            img = (frames[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(img).save(d / "frames" / f"frame_{i:02d}.png")
    model.eval()
    idx = torch.arange(FRAMES)
    with torch.no_grad():
        img_out, embed_list, _ = model(model_input(model, a, idx, frames))
    tensors = {
        "norm_idx": (idx.double() / FRAMES).contiguous(),
        "embed_input": embed_list[0].float().contiguous(),
        "output": (img_out if trained else img_out[1:2]).contiguous(),
    }
    if trained:
        for j, t in enumerate(embed_list[1:]):
            tensors[f"embed_list.{j}"] = t[1:2].contiguous()
    save_file(tensors, str(d / "reference.safetensors"))
    torch.save({"epoch": STEPS if trained else 0, "state_dict": model.state_dict(),
                "train_best_psnr": 0.0, "optimizer": None}, d / "model_best.pth")
    (d / "args.txt").write_text(text + "\n")
    meta = {"fc_dim": a.fc_dim, "seed": 1, "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters())}
    if trained:
        meta["psnr"] = [float(hnerv_utils.psnr_fn_single(img_out[i:i + 1], frames[i:i + 1])[0])
                        for i in range(FRAMES)]
        meta.update({"steps": STEPS, "final_loss": loss, "loss": a.loss, "lr": 1e-3,
                     "lr_type": "cosine_0.1_1_0.1", "batch": 2})
    (d / "metrics.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(name, "PSNR", [round(p, 3) for p in meta.get("psnr", [])], "fc_dim", a.fc_dim,
          "params", meta["params"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="a checkout of github:namithap10/xinc")
    p.add_argument("--data", required=True, help="a folder of PNG frames")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    stub_unused_imports()
    torch.set_num_threads(2)
    frames = torch.stack(load_frames(args.data)).float() / 255.0
    for name, text in CASES.items():
        torch.manual_seed(1)
        model, a = build(args.official, text, FRAMES)
        loss = float(train(model, a, frames, args.official))
        write_case(args.out, name, text, model, a, frames, args.official, loss)
    for act in ACTS:
        torch.manual_seed(1)
        text = f"{ACT_ARGS} --act {act}"
        model, a = build(args.official, text, FRAMES)
        write_case(args.out, f"act_{act}", text, model, a, frames, args.official, float("nan"),
                   trained=False)


if __name__ == "__main__":
    main()
