#!/usr/bin/env python3
"""Reference values of the official HNeRV losses and metrics (`hnerv_utils.loss_fn`,
`psnr_fn_single`, `msssim_fn_single`, which call `pytorch_msssim`) for `tests/losses_parity.rs`.

Two pairs of 176×192 frames (large enough for MS-SSIM's five scales): the targets are crops of
the bundled frames, the predictions the same crops blurred, shifted in colour and noised, all
rounded to 8 bits and stored as PNGs, so that both sides read exactly the same values.

Usage (torch on the CPU; `pip install torch numpy pillow pytorch_msssim`):

    venv/bin/python scripts/reference/losses.py --official /tmp/xinc-official \
        --data data/cityscapes_vps/vps_subset/val/0005/images \
        --out tests/fixtures/reference/losses
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

H, W = 176, 192
LOSSES = ["L2", "L1", "SSIM"] + [f"Fusion{k}" for k in range(1, 13)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    sys.path.insert(0, str(Path(args.official) / "HNeRV"))
    import hnerv_utils  # noqa: E402  (the official losses)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    gts, preds = [], []
    for i, f in enumerate(sorted(Path(args.data).glob("*.png"))[:2]):
        img = np.asarray(Image.open(f).convert("RGB"))[40:40 + H, 100:100 + W]
        gt = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255
        blurred = F.avg_pool2d(gt[None], 3, stride=1, padding=1, count_include_pad=False)[0]
        pred = blurred * 0.9 + 0.05 + 0.03 * torch.randn(gt.shape, generator=gen)
        pred = (pred.clamp(0, 1) * 255).round() / 255
        for t, name in [(gt, "gt"), (pred, "pred")]:
            Image.fromarray((t * 255).round().byte().permute(1, 2, 0).numpy()).save(
                out / f"{name}_{i}.png")
        gts.append(gt)
        preds.append(pred)
    gt, pred = torch.stack(gts), torch.stack(preds)
    values = {
        "loss_batch_mean": {n: float(hnerv_utils.loss_fn(pred, gt, n)) for n in LOSSES},
        "loss_per_frame": {n: hnerv_utils.loss_fn(pred, gt, n, batch_average=False).tolist()
                           for n in LOSSES},
        "psnr": [float(hnerv_utils.psnr_fn_single(pred[i:i + 1], gt[i:i + 1])[0])
                 for i in range(2)],
        "msssim": [float(hnerv_utils.msssim_fn_single(pred[i:i + 1], gt[i:i + 1])[0])
                   for i in range(2)],
        "torch": torch.__version__,
    }
    (out / "losses.json").write_text(json.dumps(values, indent=1) + "\n")
    print(json.dumps(values, indent=1))


if __name__ == "__main__":
    main()
