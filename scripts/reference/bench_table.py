#!/usr/bin/env python3
"""The side-by-side table of `scripts/bench-official.sh`: the official timings
(`<out>/official-<N>t.json`, written by `bench_official.py`) against xinc's criterion estimates
(`<criterion>/<group>/<bench id, '/' -> '_'>/new/estimates.json`, point estimate of the
median, nanoseconds) and the peak RSS of `xinc canvas --layers block1 --summary`
(`/usr/bin/time -v`). Prints the Markdown table and writes `<out>/table.md` and
`<out>/results.json` (every raw number).

Only criterion estimates written during this run count (modified after `--since`, a file
whose mtime marks the start of the xinc benches); older ones are reported as not run. Needs
only the Python standard library.

Usage: python3 scripts/reference/bench_table.py --out target/bench-official \
           --criterion target/criterion --since <marker file> --xinc-time <time -v output>
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

FFN, FFN_TRAIN = "ffn_canvas_128x256_w104", "ffn_train_128x256_w104"
NERV, NERV_TRAIN = "nerv_canvas_128x256", "nerv_train_128x256"

# label, official call, xinc terms [(bench id, divisor), ...] (alternatives: list of lists,
# the first one that is complete is used), goal (minimum ratio) or None, note
ROWS = [
    ("FFN all-layer maps, fresh output", "ffn_maps",
     [[(f"{FFN}/maps/all_layers", 1)]], 100, ""),
    ("FFN all-layer maps, into reused buffers", "ffn_maps",
     [[(f"{FFN}/maps/all_layers_into_reused_buffers", 1)]], None,
     "the goal is on fresh output"),
    ("FFN forward", "ffn_forward",
     [[(f"{FFN}/forward_pass", 1)]], None,
     "official: models/ffn.py (the training model, no intermediates; the analysis model, which "
     "evaluates the network twice, is ffn_forward_analysis in results.json)"),
    ("FFN training step (full batch 32,768 px)", "ffn_train_step",
     [[(f"{FFN_TRAIN}/train_20_steps", 20)]], 1.0,
     "xinc: train_20_steps / 20, includes model set-up and one evaluation"),
    ("NeRV forward, one frame", "nerv_forward",
     [[(f"{NERV}/forward", 1)]], 1.0,
     "official: model_all.py:HNeRV, no_grad (the analysis model: nerv_forward_analysis)"),
    ("NeRV training step, batch 2", "nerv_train_step",
     [[(f"{NERV_TRAIN}/step", 1)], [(f"{NERV_TRAIN}/train_10_steps", 10)]], 1.0, ""),
    ("Head call", "nerv_head",
     [[(f"{NERV}/summary/head", 1)]], None, "xinc: summary/head"),
    ("Block 3 call", "nerv_block3",
     [[(f"{NERV}/summary/block3_and_pre_gelu", 1)],
      [(f"{NERV}/summary/block3", 1), (f"{NERV}/summary/block3_pre_gelu", 1)]], 40,
     "xinc: summary/block3_and_pre_gelu (both layers in one call, as the official call; "
     "without that bench: summary/block3 + summary/block3_pre_gelu)"),
    ("Block 2 call", "nerv_block2",
     [[(f"{NERV}/summary/block2_and_pre_gelu", 1)],
      [(f"{NERV}/summary/block2", 1), (f"{NERV}/summary/block2_pre_gelu", 1)]], 40,
     "xinc: summary/block2_and_pre_gelu (both layers in one call, as the official call; "
     "without that bench: summary/block2 + summary/block2_pre_gelu)"),
    ("Block 1 call", "nerv_block1",
     [[(f"{NERV}/summary/block1_and_pre_gelu", 1)],
      [(f"{NERV}/summary/block1", 1), (f"{NERV}/summary/block1_pre_gelu", 1)]], 40,
     "xinc: summary/block1_and_pre_gelu (both layers in one call, as the official call; "
     "without that bench: summary/block1 + summary/block1_pre_gelu)"),
    ("Head, full maps in memory", "nerv_head",
     [[(f"{NERV}/maps/head", 1)]], None, "xinc: maps/head"),
    ("Block 3, full maps in memory", "nerv_block3",
     [[(f"{NERV}/maps/block3", 1), (f"{NERV}/maps/block3_pre_gelu", 1)]], None,
     "xinc: maps/block3 + maps/block3_pre_gelu"),
    ("Block 2, full maps in memory", "nerv_block2",
     [[(f"{NERV}/maps/block2", 1), (f"{NERV}/maps/block2_pre_gelu", 1)]], None,
     "xinc: maps/block2 + maps/block2_pre_gelu"),
    ("Block 1, full maps in memory", "nerv_block1",
     [[(f"{NERV}/maps/block1", 1), (f"{NERV}/maps/block1_pre_gelu", 1)]], None,
     "xinc: maps/block1 + maps/block1_pre_gelu"),
]
RSS_GOAL_MB = 300


def safe(name):
    """criterion's `make_filename_safe` (report.rs) for the characters that occur here."""
    return re.sub(r'[?"/\\*<>:|^]', "_", name)


def estimate(criterion, bench_id, since):
    """(seconds, estimates.json path, fresh) for a criterion bench id, or None if absent."""
    group, _, function = bench_id.partition("/")
    path = Path(criterion) / safe(group) / safe(function) / "new" / "estimates.json"
    if not path.is_file():
        return None
    est = json.loads(path.read_text())
    stat = est.get("median") or est.get("mean")
    fresh = since is None or path.stat().st_mtime >= since
    return {"s": stat["point_estimate"] * 1e-9, "path": str(path), "fresh": fresh,
            "median_ns": est.get("median", {}).get("point_estimate"),
            "mean_ns": est.get("mean", {}).get("point_estimate")}


def xinc_value(criterion, alternatives, since):
    """The first alternative whose benches all have fresh estimates: (seconds, text, raw)."""
    raws = {}
    for terms in alternatives:
        parts = [(bid, div, estimate(criterion, bid, since)) for bid, div in terms]
        for bid, _, e in parts:
            raws[bid] = e
        if all(e is not None and e["fresh"] for _, _, e in parts):
            total = sum(e["s"] / div for _, div, e in parts)
            text = " + ".join(bid.split("/", 1)[1] + (f" / {div}" if div != 1 else "")
                              for bid, div, _ in parts)
            return total, text, raws
    return None, None, raws


def fmt_time(s):
    if s is None:
        return "n/a"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return f"{r:.0f}×" if r >= 100 else f"{r:.3g}×"


def parse_time_v(path):
    """Maximum resident set size (MB) and wall time (s) from a `/usr/bin/time -v` output."""
    if path is None or not Path(path).is_file():
        return None
    text = Path(path).read_text(errors="replace")
    out = {"file": str(path)}
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["max_rss_kib"] = int(m.group(1))
        out["max_rss_mb"] = int(m.group(1)) * 1024 / 1e6
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if m:
        secs = 0.0
        for part in m.group(1).split(":"):
            secs = secs * 60 + float(part)
        out["wall_s"] = secs
    m = re.search(r"Exit status: (\d+)", text)
    if m:
        out["exit_status"] = int(m.group(1))
    return out


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=60).stdout.strip()
    except Exception:  # noqa: BLE001 (machine facts are best-effort)
        return ""


def machine():
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
            break
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_model": model, "cores": os.cpu_count(), "memory": mem,
            "kernel": platform.release(), "loadavg": os.getloadavg(),
            "xinc_commit": sh("git rev-parse --short HEAD"),
            "xinc_dirty": bool(sh("git status --porcelain --untracked-files=no")),
            "rustc": sh("rustc --version")}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder with official-<N>t.json; table.md and "
                                                "results.json are written here")
    p.add_argument("--threads", default="1 2", help="thread counts of the official runs")
    p.add_argument("--criterion", default=None, help="criterion's output folder")
    p.add_argument("--since", default=None,
                   help="a file whose mtime marks the start of the xinc benches")
    p.add_argument("--xinc-time", default=None, help="`/usr/bin/time -v` output of the "
                                                     "xinc block-1 summary run")
    p.add_argument("--xinc-skipped", action="store_true", help="the xinc side was not run")
    p.add_argument("--note", action="append", default=[], help="extra line for the header")
    a = p.parse_args()

    out = Path(a.out)
    threads = [int(t) for t in a.threads.split()]
    official = {}
    for t in threads:
        f = out / f"official-{t}t.json"
        if f.is_file():
            official[t] = json.loads(f.read_text())
    since = Path(a.since).stat().st_mtime if a.since and Path(a.since).exists() else None
    crit = a.criterion if a.criterion and not a.xinc_skipped else None

    info = machine()
    torch_v = next((o["torch"] for o in official.values()), "n/a")
    cols = [f"official {t} thr" for t in threads]
    header = (["call"] + cols + ["official fastest", "xinc", "ratio (official / xinc)",
                                 "goal", "met?"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows_json = []
    notes = []
    for label, call, alternatives, goal, note in ROWS:
        per = {t: official[t]["calls"].get(call, {}).get("median_s") if t in official else None
               for t in threads}
        have = [v for v in per.values() if v is not None]
        best = min(have) if have else None
        xs, xtext, raws = (xinc_value(crit, alternatives, since) if crit else (None, None, {}))
        ratio = best / xs if best is not None and xs else None
        if goal is None:
            met = "informative"
        elif ratio is None:
            met = "n/a"
        else:
            met = "met" if ratio >= goal else "not met"
        row_note = note
        if xtext and "train_10_steps" in xtext:
            row_note = ("xinc: nerv_train_128x256/step absent, fell back to train_10_steps / 10 "
                        "(includes model set-up and one evaluation)")
        elif label.startswith("NeRV training") and xtext:
            row_note = "xinc: nerv_train_128x256/step"
        stale = [bid for bid, e in raws.items() if e is not None and not e["fresh"]]
        if xs is None and stale:
            row_note = (row_note + "; " if row_note else "") + \
                "criterion estimates present but older than this run: " + ", ".join(stale)
        label_md = label + (f" [{len(notes) + 1}]" if row_note else "")
        if row_note:
            notes.append(row_note)
        lines.append("| " + " | ".join(
            [label_md] + [fmt_time(per[t]) for t in threads]
            + [fmt_time(best), fmt_time(xs), fmt_ratio(ratio),
               f"≥{goal:g}×" if goal is not None else "—", met]) + " |")
        rows_json.append({"row": label, "official_call": call,
                          "official_s": {str(t): v for t, v in per.items()},
                          "official_fastest_s": best, "xinc_s": xs, "xinc_benches": xtext,
                          "xinc_raw": raws, "ratio": ratio, "goal_min_ratio": goal,
                          "status": met, "note": row_note})

    # Memory row: the block-1 summary's whole-process peak against the official block-1 call's.
    rss = None if a.xinc_skipped else parse_time_v(a.xinc_time)
    per_mb = {}
    for t in threads:
        c = official.get(t, {}).get("calls", {}).get("nerv_block1")
        per_mb[t] = c["peak_rss_mib"] * 1024 * 1024 / 1e6 if c and c.get("peak_rss_mib") else None
    have = [v for v in per_mb.values() if v is not None]
    best_mb = min(have) if have else None
    xmb = rss.get("max_rss_mb") if rss else None
    if rss and rss.get("exit_status", 0) != 0:
        xmb = None
    mratio = best_mb / xmb if best_mb and xmb else None
    mmet = "n/a" if xmb is None else ("met" if xmb <= RSS_GOAL_MB else "not met")
    mnote = ("peak RSS of the whole process, MB = 10^6 bytes; xinc: `/usr/bin/time -v xinc canvas "
             "--layers block1 --summary` (bundled NeRV checkpoint); official: VmHWM of the "
             "benchmark process during the warm-up compute_nerv_block_1_mappings() call (returns "
             "the full maps)")
    if rss and rss.get("exit_status", 0) != 0:
        mnote += f"; xinc run FAILED (exit status {rss['exit_status']})"
    notes.append(mnote)
    fm = lambda v: "n/a" if v is None else f"{v:.0f} MB"  # noqa: E731
    lines.append("| " + " | ".join(
        [f"Block-1 summary peak RSS [{len(notes)}]"] + [fm(per_mb[t]) for t in threads]
        + [fm(best_mb), fm(xmb), fmt_ratio(mratio), f"≤{RSS_GOAL_MB} MB", mmet]) + " |")
    rows_json.append({"row": "Block-1 summary peak RSS", "official_mb": {str(t): v for t, v in per_mb.items()},
                      "official_min_mb": best_mb, "xinc_mb": xmb, "xinc_time_v": rss,
                      "ratio": mratio, "goal_max_mb": RSS_GOAL_MB, "status": mmet, "note": mnote})

    head = [
        "# xinc vs the official XINC code (PyTorch, CPU)",
        "",
        f"* Date: {info['date']}",
        f"* CPU: {info['cpu_model']}, {info['cores']} cores, {info['memory']} RAM; "
        f"load average at the end {', '.join(f'{x:.2f}' for x in info['loadavg'])}",
        f"* Official: torch {torch_v}"
        + "".join(f"; {t} thr: started {o.get('started')}, weights "
                  f"{'golden' if o.get('golden') else 'random'}"
                  for t, o in official.items())
        + (f"; official commit {next(iter(official.values())).get('official_commit')}"
           if official else ""),
        f"* xinc: commit {info['xinc_commit']}{' (with uncommitted changes)' if info['xinc_dirty'] else ''}, "
        f"{info['rustc']}; criterion median point estimates"
        + (" (xinc side not run)" if a.xinc_skipped else ""),
        "* Official method: 1 warm-up call, median of the timed calls (training: median block / "
        "steps per block); 'fastest' = the faster thread setting; ratio > 1: xinc faster.",
    ] + [f"* {n}" for n in a.note]
    missing = [t for t in threads if t not in official]
    if missing:
        head.append(f"* No official results for {missing} thread(s) in {out}.")
    text = "\n".join(head + [""] + lines + [""] + [f"[{i + 1}] {n}" for i, n in enumerate(notes)]) + "\n"
    (out / "table.md").write_text(text)
    results = {"machine": info, "threads": threads, "rows": rows_json,
               "official": {str(t): o for t, o in official.items()},
               "criterion_dir": crit, "xinc_skipped": a.xinc_skipped, "notes": a.note}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
