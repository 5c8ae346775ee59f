#!/usr/bin/env python3
"""The GPU side-by-side table of `scripts/bench-gpu.sh`: the official code's calls on the GPU
(`bench_official.py --device cuda`) against xinc's device check on the same GPU
(`xinc --device cuda check-device`, `device_check.json`).

Pairs (xinc's figure is the median over the checked frames of each row's median):
- NeRV analysis forward, one frame: official `nerv_forward_analysis` against the check's
  `nerv_frame_ms` (the forward pass with every activation the canvas reads kept);
- head, block 3, 2, 1: the official `ComputeContributions` call (a block's maps and pre-GELU maps)
  against xinc's layer summary, the block's plus its pre-GELU one, with xinc's CUDA kernels; both
  as delivered to the host and left on the device;
- NeRV training step, batch 2: official `nerv_train_step` against the check's net step (a long
  run less a short one);
- FFN all-layer maps: official `ffn_maps` against the sum of xinc's FFN layer summaries.

The official figure is its full-f32 run; a third file, the run with TF32 allowed, adds a column.

Usage: bench_gpu_table.py OFFICIAL_JSON DEVICE_CHECK_JSON [OFFICIAL_TF32_JSON] > table.md
"""

import json
import statistics
import sys


def ms(seconds):
    return None if seconds is None else seconds * 1e3


def fmt(v):
    return "-" if v is None else (f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms")


def ratio(official, xinc):
    return "-" if official is None or not xinc else f"{official / xinc:.1f}×"


def layer_ms(check, names, key):
    """Median over frames of `key`, summed over the layers `names` (xinc's own kernels)."""
    total = 0.0
    for name in names:
        per_frame = [l[key] for l in check["layers"]
                     if l["model"] == "nerv" and l["layer"] == name and l.get(key) is not None]
        if not per_frame:
            return None
        total += statistics.median(per_frame)
    return total


def main():
    official = json.load(open(sys.argv[1]))
    check = json.load(open(sys.argv[2]))
    tf32 = json.load(open(sys.argv[3]))["calls"] if len(sys.argv) > 3 else {}
    calls = official["calls"]
    call = lambda name: ms(calls.get(name, {}).get("median_s"))
    call_tf32 = {label: ms(tf32.get(name, {}).get("median_s")) for label, name in [
        ("NeRV analysis forward, one frame", "nerv_forward_analysis"), ("Head call", "nerv_head"),
        ("Block 3 call (summary + pre-GELU)", "nerv_block3"), ("Block 2 call", "nerv_block2"),
        ("Block 1 call", "nerv_block1"), ("NeRV training step, batch 2", "nerv_train_step"),
        ("FFN all-layer maps", "ffn_maps")]}
    nerv_train = next((t for t in check["training"] if t["model"] == "nerv"), {})
    ffn_rows = [l["device_median_ms"] for l in check["layers"] if l["model"] == "ffn"]
    rows = [("NeRV analysis forward, one frame", call("nerv_forward_analysis"),
             statistics.median(check["nerv_frame_ms"]) if check.get("nerv_frame_ms") else None,
             None)]
    for label, name, layers in [("Head call", "nerv_head", ["head"]),
                                ("Block 3 call (summary + pre-GELU)", "nerv_block3",
                                 ["block3", "block3_pre_gelu"]),
                                ("Block 2 call", "nerv_block2", ["block2", "block2_pre_gelu"]),
                                ("Block 1 call", "nerv_block1", ["block1", "block1_pre_gelu"])]:
        rows.append((label, call(name), layer_ms(check, layers, "device_median_ms"),
                     layer_ms(check, layers, "device_resident_median_ms")))
    rows.append(("NeRV training step, batch 2", call("nerv_train_step"),
                 nerv_train.get("device_net_ms_per_step"), None))
    rows.append(("FFN all-layer maps", call("ffn_maps"), sum(ffn_rows) if ffn_rows else None,
                 None))

    print(f"GPU: {official.get('gpu')}; torch {official.get('torch')}; official started "
          f"{official.get('started')}; xinc device {check.get('device')}\n")
    print("| call | official (f32) | xinc (to host) | ratio | xinc (on device) | ratio | "
          "official (TF32) |")
    print("|---|---|---|---|---|---|---|")
    for label, off, x, resident in rows:
        print(f"| {label} | {fmt(off)} | {fmt(x)} | {ratio(off, x)} | {fmt(resident)} | "
              f"{ratio(off, resident)} | {fmt(call_tf32.get(label))} |")
    failed = {n: c["error"] for n, c in calls.items() if "error" in c}
    if failed:
        print(f"\nOfficial calls that failed: {failed}")
    print(f"\nxinc's check passed: {check.get('pass')}; NeRV CPU net step on this machine: "
          f"{fmt(nerv_train.get('cpu_net_ms_per_step'))}")


if __name__ == "__main__":
    main()
