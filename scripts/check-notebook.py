"""Checks an executed xinc notebook: every code cell ran, no cell failed, and it shows figures.

    python check-notebook.py [--no-figures] EXECUTED.ipynb ...

(--no-figures: a notebook that shows none is fine, as run-notebooks.sh's warm-up.)

Fails (exit 1) on an `error` output, on stderr that reports a Rust compile error or a panic, on a
cell that wrote to stderr and showed nothing (an error returned by `?`), on a code cell that never ran, on a notebook without any plotly figure, and when the first figure's
HTML does not carry plotly.js (the later ones rely on it: in the HTML export and in frontends
that render `text/html`, they would stay blank). Prints what it counted, and the three slowest
cells with their seconds (nbclient's timing metadata: from the kernel's start of the cell to its
reply).
"""

import json
import re
import sys
from datetime import datetime

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "* plotly.js v"
FAILURE = re.compile(r"^error(\[E\d+\])?:|panicked at", re.MULTILINE)


def cell_seconds(cell):
    """Seconds from the cell's start to the kernel's reply, or None without timing metadata."""
    t = cell.get("metadata", {}).get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def check(path, want_figures=True):
    nb = json.load(open(path, encoding="utf-8"))
    problems, figures, tables, first_html_figure = [], 0, 0, None
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i} did not run")
        outputs = cell.get("outputs", [])
        kinds = {o["output_type"] for o in outputs}
        stderr = "".join(
            "".join(o["text"]) for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"
        ).strip()
        if stderr and not kinds & {"execute_result", "display_data"}:
            # evcxr prints an error that `?` returns to stderr and shows nothing else.
            problems.append(f"cell {i} failed: {stderr[:500]}")
        for out in outputs:
            kind = out["output_type"]
            if kind == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif kind == "stream" and out["name"] == "stderr":
                text = "".join(out["text"])
                if FAILURE.search(text):
                    problems.append(f"cell {i} stderr: {text[:500]}")
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                html = "".join(data.get("text/html", ""))
                if PLOTLY_MIME in data or "plotly-graph-div" in html:
                    figures += 1
                if "plotly-graph-div" in html and first_html_figure is None:
                    first_html_figure = (i, PLOTLY_JS in html)
                if "<table" in html:
                    tables += 1
    if figures == 0 and want_figures:
        problems.append("no plotly figure was displayed")
    if first_html_figure is not None and not first_html_figure[1]:
        problems.append(f"cell {first_html_figure[0]}: the first figure does not carry plotly.js")
    print(f"   {path}: {figures} figures, {tables} tables")
    timed = [(cell_seconds(c), i, "".join(c["source"]).split("\n")[0])
             for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    timed = sorted((t for t in timed if t[0] is not None), reverse=True)
    if timed:
        total = sum(t[0] for t in timed)
        slowest = "; ".join(f"cell {i} {s:.1f} s ({line[:40]})" for s, i, line in timed[:3])
        print(f"   cells: {total:.1f} s in all; slowest: {slowest}")
    for p in problems:
        print(f"   PROBLEM {p}")
    return not problems


if __name__ == "__main__":
    args = sys.argv[1:]
    want_figures = "--no-figures" not in args
    ok = all([check(p, want_figures) for p in args if p != "--no-figures"])
    sys.exit(0 if ok else 1)
