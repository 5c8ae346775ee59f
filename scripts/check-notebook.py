"""Checks an executed xinc notebook: every code cell ran, no cell failed, and it shows figures.

    python check-notebook.py EXECUTED.ipynb

Fails (exit 1) on an `error` output, on stderr that reports a Rust compile error or a panic, on a
code cell that never ran, and on a notebook without any plotly figure. Prints what it counted.
"""

import json
import re
import sys

PLOTLY_MIME = "application/vnd.plotly.v1+json"
FAILURE = re.compile(r"^error(\[E\d+\])?:|panicked at", re.MULTILINE)


def check(path):
    nb = json.load(open(path, encoding="utf-8"))
    problems, figures, tables = [], 0, 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i} did not run")
        for out in cell.get("outputs", []):
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
                if "<table" in html:
                    tables += 1
    if figures == 0:
        problems.append("no plotly figure was displayed")
    print(f"   {path}: {figures} figures, {tables} tables")
    for p in problems:
        print(f"   PROBLEM {p}")
    return not problems


if __name__ == "__main__":
    ok = all([check(p) for p in sys.argv[1:]])
    sys.exit(0 if ok else 1)
