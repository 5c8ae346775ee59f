#!/usr/bin/env python3
"""Reference outputs of the official HNeRV compression pipeline for xinc's `xinc compress`
(`tests/compression_reference.rs`): the NeRV fixtures of `nerv_families.py` (their
`model_best.pth`, flags and frames) are quantised as `train_nerv_all.py` does after training
(`quant_model`: `hnerv_utils.quant_tensor` on every state-dict tensor but the encoder's, 8 bits;
the decoder inputs of every frame, `embed_list[0]`, 6 bits), Huffman-coded with `dahuffman`
as `evaluate(huffman_coding=True)` does, and the quantised model is evaluated on the dequantised
inputs (`psnr_fn_single`).

`quant_model` is run from the official source (its definition is read out of
`train_nerv_all.py`, which is a command-line program and cannot be imported); the bit counts
follow `evaluate`'s Huffman block: the code lengths of `HuffmanCodec.from_data` over every
quantised value, bits = Σ frequency × code length, the overhead 16 bits per stored min and scale,
bits per pixel = bits with overhead / (H·W) / frames.

Usage (torch on the CPU, as nerv_families.py, plus dahuffman):

    venv/bin/pip install torch numpy safetensors pytorch_msssim pillow dahuffman
    venv/bin/python scripts/reference/compression.py --official /tmp/xinc-official \
        --fixtures tests/fixtures/reference/nerv_families \
        --out tests/fixtures/reference/compression

Writes, per case, `<out>/<case>/quantised.safetensors` (`quant.<key>` as u8, `min.<key>` and
`scale.<key>` as f32, for every quantised tensor and for `embed`) and `compression.json` (the
chosen quantisation of each tensor, the bit counts, the PSNR per frame before and after).
"""

import argparse
import ast
import json
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import nerv_families  # noqa: E402  (the model builder and the official-import stand-ins)

CASES = ["nerv_pshuffel_gelu", "hnerv", "nerv_conv_relu_bn"]
MODEL_BITS, EMBED_BITS = 8, 6


def official_quant_model(official):
    """`quant_model` of train_nerv_all.py, executed from its source."""
    import hnerv_utils
    src = (Path(official) / "HNeRV" / "train_nerv_all.py").read_text()
    fn = next(n for n in ast.parse(src).body
              if isinstance(n, ast.FunctionDef) and n.name == "quant_model")
    space = {"deepcopy": deepcopy, "quant_tensor": hnerv_utils.quant_tensor}
    exec(compile(ast.Module([fn], []), "train_nerv_all.py", "exec"), space)
    return space["quant_model"]


def frames_of(case_dir):
    files = sorted((case_dir / "frames").glob("*.png"))
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")))
                        .permute(2, 0, 1).float() / 255 for f in files])


def bits(quant_embed, quant_ckt):
    """evaluate()'s Huffman block: (total bits, bits with overhead, values, overhead entries)."""
    from dahuffman import HuffmanCodec
    values = quant_embed["quant"].flatten().tolist()
    overhead = quant_embed["min"].nelement() + quant_embed["scale"].nelement()
    for q in quant_ckt.values():
        values.extend(q["quant"].flatten().tolist())
        overhead += q["min"].nelement() + q["scale"].nelement()
    unique, counts = np.unique(values, return_counts=True)
    lengths = {k: v[0] for k, v in HuffmanCodec.from_data(values).get_code_table().items()}
    total = sum(int(c) * lengths[u] for u, c in zip(unique, counts))
    return total, total + overhead * 16, len(values), overhead


def which(t, q):
    """Which candidate quant_tensor chose: None (the whole tensor) or the axis."""
    if q["min"].dim() == 0:
        return None
    return next(a for a in range(t.dim()) if q["min"].shape[a] == 1 and t.shape[a] > 1)


def run_case(official, fixtures, out, name):
    import hnerv_utils
    d = Path(fixtures) / name
    text = (d / "args.txt").read_text().strip()
    frames = frames_of(d)
    n = len(frames)
    model, a = nerv_families.build(official, text, n)
    model.load_state_dict(torch.load(d / "model_best.pth", weights_only=True)["state_dict"])
    model.eval()
    a.quant_model_bit = MODEL_BITS
    idx = torch.arange(n)
    with torch.no_grad():
        out_orig, embed_list, _ = model(nerv_families.model_input(model, a, idx, frames))
        models, quant_ckt = official_quant_model(official)(model, a)
        quant_embed, dequant_embed = hnerv_utils.quant_tensor(embed_list[0], EMBED_BITS)
        out_quant, _, _ = models[1](nerv_families.model_input(model, a, idx, frames), dequant_embed)
    total, full, count, overhead = bits(quant_embed, quant_ckt)
    h, w = frames.shape[-2:]
    tensors, chosen = {}, {}
    state = model.state_dict()
    for key, q in list(quant_ckt.items()) + [("embed", quant_embed)]:
        tensors[f"quant.{key}"] = q["quant"].contiguous()
        tensors[f"min.{key}"] = q["min"].float().contiguous()
        tensors[f"scale.{key}"] = q["scale"].float().contiguous()
        src = embed_list[0] if key == "embed" else state[key]
        chosen[key] = which(src, q)
    o = Path(out) / name
    o.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(o / "quantised.safetensors"))
    psnr = lambda y: [float(hnerv_utils.psnr_fn_single(y[i:i + 1], frames[i:i + 1])[0]) for i in range(n)]
    meta = {
        "case": name, "model_bits": MODEL_BITS, "embed_bits": EMBED_BITS,
        "quantised_axis": chosen, "values": count, "overhead_entries": overhead,
        "total_bits": total, "total_bits_with_overhead": full,
        "bits_per_param": total / count, "bits_per_param_with_overhead": full / count,
        "bits_per_pixel": full / (h * w) / n,
        "psnr": psnr(out_orig), "quant_psnr": psnr(out_quant),
        "torch": torch.__version__,
    }
    (o / "compression.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(name, {k: meta[k] for k in ["bits_per_param", "bits_per_param_with_overhead",
                                       "bits_per_pixel", "quant_psnr"]})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="a checkout of github:namithap10/xinc")
    p.add_argument("--fixtures", required=True, help="tests/fixtures/reference/nerv_families")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(2)
    nerv_families.stub_unused_imports()
    sys.path.insert(0, str(Path(args.official) / "HNeRV"))
    for name in CASES:
        run_case(args.official, args.fixtures, args.out, name)


if __name__ == "__main__":
    main()
