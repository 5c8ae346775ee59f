#!/usr/bin/env python3
"""Reference outputs of the official `image_inr` code for xinc's image families
(`tests/image_reference.rs`): an FFN with the `nerf` positional encoding (`models/ffn.py` on
`models/base_model.py`, `PosEncodingNeRF`) and a SIREN (`models/layers/siren.py`), each trained
for 300 seeded full-batch Adam steps (lr 9e-4, MSE: the official trainer's recipe) on a 32×64
frame, then written as the official trainer writes them: `best_model.ckpt` (a Lightning-style
dictionary whose `state_dict` keys carry the `model.` prefix) and `exp_config.yaml`, with the
forward pass and the official PSNR. For the FFN, also the official contribution maps
(`model_all_analysis.ffn` + `get_mlp_mappings.ComputeMLPContributions`, as the official analysis
runs them) of the first KEEP pixels, in `official_maps.safetensors`; `--maps-only` recomputes them
from the stored checkpoint.

Usage (torch on the CPU):

    python3 -m venv venv && venv/bin/pip install torch numpy safetensors pillow easydict pyyaml \
        torchvision einops lightning
    venv/bin/python scripts/reference/image_families.py --official /tmp/xinc-official \
        --image data/cityscapes_vps/val/img_all/frankfurt_000000_001736_leftImg8bit.png \
        --out tests/fixtures/reference/image_families

`--official` is a checkout of github:namithap10/xinc. Official bug worked around: the SIREN
module imports `model_utils` from its own folder, where there is none (the official trainer
cannot build a SIREN); the script points that import at `models/model_utils.py`.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from easydict import EasyDict
from PIL import Image
from safetensors.torch import save_file

H, W, WIDTH, LAYERS, STEPS, LR, KEEP = 32, 64, 32, 3, 300, 9e-4, 512


def config(model_name, encoding):
    """The official Hydra configuration's fields that the model classes read."""
    return EasyDict({
        "network": {
            "model_name": model_name, "layer_size": WIDTH, "num_layers": LAYERS, "dim_in": 2,
            "dim_out": 3, "final_act": None, "w0": 30.0, "w0_initial": 30.0,
            "activation": "relu", "use_bias": True, "sidelength": max(H, W),
            "pos_encoding": {"type": encoding, "num_frequencies": None,
                             "fourier_mapping_size": WIDTH, "fourier_noise_scale": 10.0},
        },
        "data": {"dim_in": 2, "dim_out": 3, "patch_shape": None, "data_shape": [H, W]},
    })


def build(official, name):
    sys.path.insert(0, str(Path(official) / "image_inr"))
    import models.model_utils  # noqa: E402  (the official modules)
    sys.modules["models.layers.model_utils"] = models.model_utils
    if name == "ffn_nerf":
        from models.ffn import ffn
        cfg = config("ffn", "nerf")
        return ffn(cfg), cfg
    from models.layers.siren import siren
    cfg = config("siren", None)
    return siren(cfg, dim_in=2, dim_out=3, use_bias=True), cfg


def coordinates():
    """The official grid: (row, column) pairs, both over max(H, W) − 1, to [−1, 1]."""
    coords = torch.ones(H, W).nonzero(as_tuple=False).float()
    return (coords / (max(H, W) - 1) - 0.5) * 2


def psnr(pred, gt):
    """The official image PSNR: the prediction clamped and rounded to 8 bits."""
    q = torch.round(pred.clamp(0, 1) * 255) / 255
    return float(-10 * torch.log10(((q - gt) ** 2).mean()))


def forward(model, x):
    out = model(x)
    return out["predicted"] if isinstance(out, dict) else out


def hidden(model, x):
    """The post-activation output of each hidden layer, and the encoded input."""
    enc = model.positional_encoding(x) if hasattr(model, "positional_encoding") else x
    acts, h = [], enc
    for layer in list(model.net)[:-1]:
        h = layer(h)
        acts.append(h)
    return enc, acts


def official_maps(official, cfg, state, x):
    """The official maps of the FFN with weights `state` over the grid `x`, first KEEP pixels:
    `layer{k}` [N, KEEP] (k = 1, 2, 3) and `layer3_rgb` [N, 3, KEEP]."""
    sys.path.insert(0, str(Path(official) / "image_inr"))
    import get_mlp_mappings
    import model_all_analysis
    model = model_all_analysis.ffn(cfg)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out = model(x)
        maps = get_mlp_mappings.ComputeMLPContributions(
            model, out["intermediate_results"], (H, W)).compute_all_layer_mappings()
    c1, c2, c3, _, _, c3_rgb = maps
    flat = lambda m: m.reshape(m.shape[0], -1, H * W)[..., :KEEP].squeeze(1).contiguous()
    return {"layer1": flat(c1), "layer2": flat(c2), "layer3": flat(c3), "layer3_rgb": flat(c3_rgb)}


def yaml_text(cfg):
    net = {k: v for k, v in cfg.network.items()}
    net["pos_encoding"] = dict(cfg.network.pos_encoding)
    return yaml.safe_dump({"network": net, "data": {"dim_in": 2, "dim_out": 3,
                                                    "data_shape": [H, W]}}, sort_keys=False)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--maps-only", action="store_true",
                   help="only recompute official_maps.safetensors from the stored FFN checkpoint")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.maps_only:
        d = Path(args.out) / "ffn_nerf"
        ckpt = torch.load(d / "best_model.ckpt", weights_only=True)
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
        save_file(official_maps(args.official, config("ffn", "nerf"), state, coordinates()),
                  str(d / "official_maps.safetensors"))
        return
    img = Image.open(args.image).convert("RGB").resize((W, H), Image.BILINEAR)
    for name in ["ffn_nerf", "siren"]:
        d = Path(args.out) / name
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / "image.png")
        gt = torch.from_numpy(np.asarray(img)).float().reshape(-1, 3) / 255
        torch.manual_seed(1)
        model, cfg = build(args.official, name)
        x = coordinates()
        opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
        for _ in range(STEPS):
            loss = ((forward(model, x) - gt) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = forward(model, x)
            enc, acts = hidden(model, x)
        # Kept small: the intermediate activations of the first KEEP pixels (rows 0..8).
        tensors = {"coords": x.contiguous(), "encoding": enc[:KEEP].contiguous(),
                   "output": out.contiguous()}
        for i, a in enumerate(acts):
            tensors[f"layer.{i}"] = a[:KEEP].contiguous()
        save_file(tensors, str(d / "reference.safetensors"))
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        torch.save({"epoch": STEPS, "global_step": STEPS, "state_dict": state},
                   d / "best_model.ckpt")
        (d / "exp_config.yaml").write_text(yaml_text(cfg))
        if name == "ffn_nerf":
            save_file(official_maps(args.official, cfg, model.state_dict(), x),
                      str(d / "official_maps.safetensors"))
        meta = {"psnr": psnr(out, gt), "final_loss": loss.item(), "steps": STEPS, "lr": LR,
                "seed": 1, "torch": torch.__version__,
                "params": sum(p.numel() for p in model.parameters())}
        (d / "metrics.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(name, meta)


if __name__ == "__main__":
    main()
