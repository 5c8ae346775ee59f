"""Opens HTML pages in headless Chromium and fails unless every plotly figure on them is drawn.

    python scripts/check-pages.py [--timeout S] [--min-figures N] [--screenshot DIR] PAGE.html|DIR ...
    python scripts/check-pages.py --self-test

A page FAILS (exit status 1) when, after its load event and up to `--timeout` seconds (default 30)
for the plots to draw,
- a figure div (`.plotly-graph-div`) holds no drawn plot (`svg.main-svg`);
- two figure divs share an id (plotly.js then draws both into the first: the second stays blank);
  any other id repeated outside the figures is a failure too (ids inside a drawn figure belong to
  plotly.js, e.g. the modebar logo's, and are not counted);
- the page logs a JavaScript error: an uncaught exception, `console.error`/`console.assert`, or a
  browser error such as a resource that failed to load (a page must open offline: a CDN script
  it tries to fetch is an error here);
- it has fewer than `--min-figures` figure divs (default 0: a page without figures passes, and
  says so).
A directory stands for every `*.html` in it. One line per page: figures drawn / total, tables,
JavaScript errors, seconds; then one line per problem, naming the file, the figure div's id, its
position among the page's figures and the nearest heading above it. `--screenshot DIR` writes
DIR/<page>.png, the full page 1300 CSS pixels wide (at most 30000 high).

`--self-test` builds four small pages with the plotly.js of the Python `plotly` package (two
figures sharing an id, a script error, a missing script, two good figures) and checks that the
first three fail and the last passes.

Needs Chromium (`$CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on PATH) and
the Python package `websocket-client`: run it with the notebook virtualenv's python
(~/.cache/xinc/notebook-venv/bin/python, see scripts/setup-notebooks.sh), which also has `plotly`.
Chromium runs with a temporary profile that is removed on exit, Ctrl-C included.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import websocket  # websocket-client
except ImportError:
    sys.exit("check-pages: needs the Python package websocket-client (use the notebook venv's python)")

LOAD_TIMEOUT = 300  # seconds for the load event: the report is ~14 MB of inline script and JSON
WIDTH, MAX_HEIGHT = 1300, 30000  # viewport width; screenshot height cap

# Evaluated in the page: every figure div (drawn or not, nearest heading above it), the ids used
# more than once outside plotly's own drawing, the number of tables.
INSPECT = r"""(() => {
  const figures = [];
  let heading = "";
  for (const e of document.querySelectorAll("h1,h2,h3,h4,h5,h6,.plotly-graph-div")) {
    if (!e.classList.contains("plotly-graph-div")) {
      heading = e.textContent.replace(/\s+/g, " ").replace(/¶$/, "").trim().slice(0, 100);
    } else {
      figures.push({id: e.id, drawn: !!e.querySelector("svg.main-svg"), heading});
    }
  }
  const counts = {};
  for (const e of document.querySelectorAll("[id]")) {
    if (e.parentElement && e.parentElement.closest(".plotly-graph-div")) continue;
    const key = (e.classList.contains("plotly-graph-div") ? "figure:" : "element:") + e.id;
    counts[key] = (counts[key] || 0) + 1;
  }
  const repeated = Object.entries(counts).filter(([, n]) => n > 1).map(([k, n]) => [k, n]);
  return {figures, repeated, tables: document.querySelectorAll("table").length};
})()"""


class Chromium:
    """Headless Chromium with a temporary profile, driven over one DevTools websocket; a context
    manager that quits it and removes the profile. `send` returns a command's result; the events
    that arrive meanwhile are kept per session (tab) in `events`."""

    def __init__(self):
        names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else [
            "chromium", "chromium-browser", "google-chrome"]
        exe = next(filter(None, map(shutil.which, names)), None)
        if not exe:
            sys.exit(f"check-pages: no Chromium ({' / '.join(names)}): install Debian's "
                     "`chromium` or set $CHROMIUM to the browser's path")
        self.ws = None
        self.profile = tempfile.mkdtemp(prefix="check-pages-")
        tmp = Path(self.profile, "tmp")  # Chromium's own temporary files, removed with the profile
        tmp.mkdir()
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": str(tmp)})
        self.last_id, self.events = 0, {}
        try:  # the port and path of the DevTools websocket: Chromium writes them once it listens
            port_file, deadline = Path(self.profile, "DevToolsActivePort"), time.time() + 60
            while len(lines := (port_file.read_text().split() if port_file.exists() else [])) < 2:
                if self.proc.poll() is not None or time.time() > deadline:
                    sys.exit(f"check-pages: {exe} did not start (try it by hand with --headless=new)")
                time.sleep(0.1)
            self.ws = websocket.create_connection(f"ws://127.0.0.1:{lines[0]}{lines[1]}",
                                                  timeout=LOAD_TIMEOUT, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def send(self, method, session=None, **params):
        self.last_id += 1
        msg = {"id": self.last_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while (reply := self._receive()).get("id") != self.last_id:
            pass
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def evaluate(self, session, expression):
        """The value of a JavaScript expression in the tab."""
        reply = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"check-pages' own script failed: {reply['exceptionDetails']}")
        return reply["result"]["value"]

    def _receive(self):
        msg = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.setdefault(msg.get("sessionId"), []).append(msg)
        return msg

    def wait_for(self, session, method, seconds):
        """Waits until the tab has sent the event `method`; False after `seconds`."""
        deadline = time.time() + seconds
        while not any(e["method"] == method for e in self.events.get(session, [])):
            if not self.pump(deadline - time.time()):
                return False
        return True

    def pump(self, seconds):
        """Receives messages for up to `seconds`; False when none came."""
        if seconds <= 0:
            return False
        self.ws.settimeout(seconds)
        try:
            self._receive()
            return True
        except websocket.WebSocketTimeoutException:
            return False
        finally:
            self.ws.settimeout(LOAD_TIMEOUT)

    def close(self):
        """Asks Chromium to quit (so that it cleans up after itself), then kills it if need be."""
        try:
            self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
            self.ws.close()
            stops = (lambda: None, self.proc.terminate, self.proc.kill)
        except Exception:  # no websocket yet, or a broken one
            stops = (self.proc.terminate, self.proc.kill)
        for stop in stops:
            stop()
            try:
                self.proc.wait(5)
                break
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def js_errors(events):
    """The JavaScript errors among a tab's DevTools events, one line each."""
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "")
            out.append(f"uncaught {text.splitlines()[0] if text else ''} "
                       f"({d.get('url', '')}:{d.get('lineNumber', 0) + 1})")
        elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            out.append(f"console.{p['type']}: {args}")
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"{p['entry']['text']} {p['entry'].get('url', '')}".strip())
    return [line[:300] for line in out]


def check(chromium, page, timeout, min_figures, screenshot_dir):
    """Opens `page` in a new tab and prints its summary; returns its problems (none: it passed)."""
    start = time.time()
    target = chromium.send("Target.createTarget", url="about:blank")["targetId"]
    tab = chromium.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log"):
            chromium.send(f"{domain}.enable", tab)
        chromium.send("Emulation.setDeviceMetricsOverride", tab, width=WIDTH, height=900,
                      deviceScaleFactor=1, mobile=False)
        problems = []
        nav = chromium.send("Page.navigate", tab, url=Path(page).resolve().as_uri())
        if nav.get("errorText"):
            problems.append(f"could not open: {nav['errorText']}")
        elif not chromium.wait_for(tab, "Page.loadEventFired", LOAD_TIMEOUT):
            problems.append(f"no load event in {LOAD_TIMEOUT} s")
        deadline = time.time() + timeout
        while True:  # until every figure is drawn or the timeout
            state = chromium.evaluate(tab, INSPECT)
            if all(f["drawn"] for f in state["figures"]) or time.time() > deadline:
                break
            chromium.pump(0.25)
        while chromium.pump(0.3):  # errors logged while the last plots drew
            pass
        figures = state["figures"]
        errors = js_errors(chromium.events.get(tab, []))
        problems += [f"JavaScript error: {e}" for e in errors]
        for i, f in enumerate(figures, 1):
            if not f["drawn"]:
                problems.append(f"blank figure {i} of {len(figures)}: div id=\"{f['id']}\" "
                                f"under \"{f['heading'] or '(no heading)'}\"")
        for key, n in state["repeated"]:
            kind, _, ident = key.partition(":")
            problems.append(f"{n} {'figure divs' if kind == 'figure' else 'elements'} "
                            f"share the id \"{ident}\"")
        if len(figures) < min_figures:
            problems.append(f"{len(figures)} figures, fewer than --min-figures {min_figures}")
        if screenshot_dir:
            screenshot(chromium, tab, Path(screenshot_dir) / (Path(page).stem + ".png"))
        drawn = sum(f["drawn"] for f in figures)
        print(f"{'FAIL' if problems else 'ok  '} {page}: {drawn}/{len(figures)} figures drawn"
              f"{' (no figures on the page)' if not figures else ''}, {state['tables']} tables, "
              f"{len(errors)} JavaScript errors, {time.time() - start:.1f} s", flush=True)
        for p in problems:
            print(f"     {page}: {p}", flush=True)
        return problems
    finally:
        chromium.send("Target.closeTarget", targetId=target)
        chromium.events.pop(tab, None)


def screenshot(chromium, tab, out):
    height = chromium.evaluate(tab, "document.documentElement.scrollHeight")
    chromium.send("Emulation.setDeviceMetricsOverride", tab, width=WIDTH,
                  height=min(int(height), MAX_HEIGHT), deviceScaleFactor=1, mobile=False)
    chromium.pump(0.5)  # let responsive plots follow the resize
    png = chromium.send("Page.captureScreenshot", tab, format="png", captureBeyondViewport=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(png["data"]))


def self_test(chromium, timeout):
    """Pages that must fail (two figures sharing an id, a script error, a missing script) and
    one that must pass (two figures, distinct ids)."""
    try:
        import plotly
    except ImportError:
        sys.exit("check-pages --self-test: needs the Python package plotly (the notebook venv)")
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    figure = ('<h2>Figure {id}</h2><div id="{id}" class="plotly-graph-div"></div><script>'
              'Plotly.newPlot(document.getElementById("{id}"), [{{y: [1, 3, 2]}}]);</script>')
    cases = {  # name: (body, should fail)
        "shared-id": (figure.format(id="maps") + figure.format(id="maps"), True),
        "script-error": (figure.format(id="a") + "<script>throw new Error('x')</script>", True),
        "missing-script": (figure.format(id="a") + '<script src="missing.js"></script>', True),
        "two-figures": (figure.format(id="a") + figure.format(id="b"), False),
    }
    wrong = []
    with tempfile.TemporaryDirectory(prefix="check-pages-self-test-") as tmp:
        shutil.copy(plotly_js, tmp)
        for name, (body, should_fail) in cases.items():
            page = Path(tmp, f"{name}.html")
            page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8">'
                            f'<script src="plotly.min.js"></script></head><body>{body}</body></html>')
            if bool(check(chromium, page, timeout, 1, None)) != should_fail:
                wrong.append(f"{name} should {'fail' if should_fail else 'pass'}")
    print(f"== check-pages self-test: {'FAILED: ' + '; '.join(wrong) if wrong else 'ok'}")
    return not wrong


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", metavar="PAGE.html|DIR")
    ap.add_argument("--timeout", type=float, default=30.0, metavar="S",
                    help="seconds after the load event for every figure to draw (default 30)")
    ap.add_argument("--min-figures", type=int, default=0, metavar="N",
                    help="fail a page with fewer figures (default 0)")
    ap.add_argument("--screenshot", metavar="DIR", help="write DIR/<page>.png, the full page")
    ap.add_argument("--self-test", action="store_true",
                    help="check that bad pages fail and a good one passes (needs plotly)")
    a = ap.parse_args()
    pages = []
    for p in a.pages:
        pages += sorted(Path(p).glob("*.html")) if Path(p).is_dir() else [Path(p)]
    if not pages and not a.self_test:
        ap.error("no page to check" + (" (no *.html in the directories given)" if a.pages else ""))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `with` closes Chromium
    try:
        with Chromium() as chromium:
            ok = self_test(chromium, min(a.timeout, 5)) if a.self_test else True
            failed = [p for p in pages if check(chromium, p, a.timeout, a.min_figures, a.screenshot)]
    except KeyboardInterrupt:
        sys.exit(130)
    if failed:
        print(f"== check-pages: {len(failed)} of {len(pages)} pages FAILED: "
              + " ".join(map(str, failed)))
    sys.exit(0 if ok and not failed else 1)


if __name__ == "__main__":
    main()
