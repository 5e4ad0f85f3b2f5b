#!/usr/bin/env python3
"""Opens a qtune HTML report in headless Chromium and checks it as a reader
would see it.

Usage: browser_check.py REPORT.html SCREENSHOT.png

Chromium is driven over its DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages separated by NUL bytes on file
descriptors 3 and 4), so nothing beyond the Python standard library and
Debian's `chromium` is needed. The page is opened with the network
emulated offline, and any request that is not for the file itself fails the
check, as does any console error or uncaught exception. Through the DOM it
checks that every chart drew the number of points the embedded data calls
for (counted here from the JSON, independently of the page's script), then
picks another layer in the layer selector with the keyboard and clicks a
point of the per-layer chart with the mouse, and checks that the histogram
and weight charts follow. Finally it saves a full-page screenshot.

Prints one JSON line with what it counted; exits 1 with the reasons when a
check fails, 2 when the browser cannot be driven.
"""

import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 60


class Browser:
    def __init__(self, binary):
        self.tmp = tempfile.mkdtemp(prefix="qtune-browser-")
        to_child_r, self.to_child_w = os.pipe()
        self.from_child_r, from_child_w = os.pipe()

        def wire():
            # Through fresh copies: dup2 onto the same number would keep
            # the close-on-exec flag of a pipe that already sits on 3 or 4.
            r, w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                "--user-data-dir=" + self.tmp,
                "about:blank",
            ],
            preexec_fn=wire,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("QTUNE_BROWSER_LOG") else subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            if time.time() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.from_child_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + TIMEOUT_S
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, name, deadline_s=TIMEOUT_S):
        deadline = time.time() + deadline_s
        for i, e in enumerate(self.events):
            if e.get("method") == name:
                return self.events.pop(i)
        while True:
            m = self._read_message(deadline)
            if m.get("method") == name:
                return m
            self.events.append(m)

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def embedded(html_text):
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html_text, re.S)
    if not m:
        raise ValueError("the report has no embedded data")
    return json.loads(m.group(1))


def finite(v):
    return v is not None and math.isfinite(v)


def expected_static(d):
    """Points each static chart must draw, from the embedded data."""
    exp = {}
    cum = sum(1 for l in d["layers"] if l["cumulative"] is not None)
    iso = sum(1 for l in d["layers"] if l["isolated"] is not None)
    if cum + iso:
        exp["layers"] = 2 * (cum + iso)  # cosine and SQNR panels
    names = {l["name"] for l in d["layers"]}
    if d["weights"]:
        exp["weight-spread"] = sum(1 for w in d["weights"] if w["layer"] in names)
    s = d.get("search")
    if s:
        if s["trajectory"]:
            exp["trajectory"] = sum(1 for p in s["trajectory"] if finite(p["cos"]))
        if s["layers"]:
            exp["search-layers"] = sum(
                1 for l in s["layers"] for v in l["losses"] if finite(v) and v > 0
            )
    for k, t in enumerate(d["transforms"]):
        if t["rows"]:
            exp[f"transform-{k}"] = 2 * len(t["rows"])
    return exp


def expected_dynamic(d, name):
    """What the histogram and weight charts must draw for layer `name`."""
    out = {}
    for h in d["histograms"]:
        if h["tensor"] == name:
            out["bars"] = sum(1 for c in h["counts"] if c > 0)
            out["thresholds"] = len(h["thresholds"]) + (1 if h["chosen"] is not None else 0)
    for w in d["weights"]:
        if w["layer"] == name:
            out["channels"] = len(w["channel_min"])
    return out


DOM_STATE = """(() => {
  const charts = {};
  document.querySelectorAll("svg.chart").forEach(s => {
    charts[s.getAttribute("data-chart")] = {
      pts: s.querySelectorAll("circle.pt").length,
      bars: s.querySelectorAll("rect.bar").length,
      thresholds: s.querySelectorAll("line.th").length,
      channels: s.querySelectorAll("line.ch").length,
      title: (s.querySelector("text") || {}).textContent || ""
    };
  });
  const sel = document.getElementById("layer-select");
  return JSON.stringify({charts, selected: sel ? sel.value : null,
    options: sel ? Array.from(sel.options).map(o => o.value) : [],
    rows: document.querySelectorAll("#layer-table tbody tr").length});
})()"""


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    html_path, png_path = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        print("chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with open(html_path, encoding="utf-8") as f:
        data = embedded(f.read())
    url = "file://" + html_path
    failures = []
    b = Browser(binary)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ["Page", "Runtime", "Log", "Network"]:
            b.call(domain + ".enable", {}, session)
        b.call("Network.emulateNetworkConditions",
               {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}, session)
        b.call("Emulation.setDeviceMetricsOverride",
               {"width": 1240, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session)
        b.call("Page.navigate", {"url": url}, session)
        b.wait_event("Page.loadEventFired")

        def evaluate(expr):
            r = b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
            if "exceptionDetails" in r:
                raise RuntimeError(f"evaluate: {r['exceptionDetails']}")
            return r["result"].get("value")

        state = json.loads(evaluate(DOM_STATE))
        counted = {"static": {}, "dynamic": []}
        for chart, n in expected_static(data).items():
            got = state["charts"].get(chart, {}).get("pts")
            counted["static"][chart] = got
            if got != n:
                failures.append(f"chart {chart}: {got} points drawn, the data has {n}")
        if state["rows"] != len(data["layers"]):
            failures.append(f"layer table: {state['rows']} rows, {len(data['layers'])} layers")

        def check_dynamic(name, how):
            st = json.loads(evaluate(DOM_STATE))
            if st["selected"] != name:
                failures.append(f"{how}: selector shows {st['selected']!r}, expected {name!r}")
            exp = expected_dynamic(data, name)
            h = st["charts"].get("histogram", {})
            w = st["charts"].get("weights", {})
            got = {"bars": h.get("bars"), "thresholds": h.get("thresholds"), "channels": w.get("channels")}
            for key, n in exp.items():
                if got[key] != n:
                    failures.append(f"{how}, layer {name}: {got[key]} {key} drawn, the data has {n}")
            if "bars" in exp and name not in h.get("title", ""):
                failures.append(f"{how}: histogram title {h.get('title')!r} does not name {name}")
            counted["dynamic"].append({"layer": name, "how": how, **got})
            return st

        options = state["options"]
        if options:
            check_dynamic(state["selected"], "initial")
            # Keyboard on the focused selector, as a reader picks a layer.
            rect = json.loads(evaluate(
                "JSON.stringify(document.getElementById('layer-select').getBoundingClientRect())"))
            evaluate("document.getElementById('layer-select').scrollIntoView({block:'center'})")
            rect = json.loads(evaluate(
                "JSON.stringify(document.getElementById('layer-select').getBoundingClientRect())"))
            evaluate("document.getElementById('layer-select').focus()")
            key = "ArrowDown" if options.index(state["selected"]) + 1 < len(options) else "ArrowUp"
            code = 40 if key == "ArrowDown" else 38
            for t in ["rawKeyDown", "keyUp"]:
                b.call("Input.dispatchKeyEvent", {"type": t, "key": key, "code": key,
                                                   "windowsVirtualKeyCode": code}, session)
            i = options.index(state["selected"]) + (1 if key == "ArrowDown" else -1)
            check_dynamic(options[i], "keyboard on the selector")
            # A mouse click on a point of the per-layer chart.
            if "layers" in state["charts"]:
                pick = json.loads(evaluate("""(() => {
                  const D = JSON.parse(document.getElementById('report-data').textContent);
                  const opts = Array.from(document.getElementById('layer-select').options).map(o => o.value);
                  const sel = document.getElementById('layer-select').value;
                  const pts = Array.from(document.querySelectorAll('svg[data-chart="layers"] circle.pt'));
                  const p = pts.find(c => { const n = D.layers[Number(c.dataset.i)].name;
                                            return n !== sel && opts.includes(n); });
                  if (!p) return "null";
                  p.scrollIntoView({block: 'center'});
                  const r = p.getBoundingClientRect();
                  return JSON.stringify({name: D.layers[Number(p.dataset.i)].name,
                                         x: r.left + r.width / 2, y: r.top + r.height / 2});
                })()"""))
                if pick:
                    for t in ["mousePressed", "mouseReleased"]:
                        b.call("Input.dispatchMouseEvent", {"type": t, "x": pick["x"], "y": pick["y"],
                                                            "button": "left", "clickCount": 1}, session)
                    check_dynamic(pick["name"], "mouse click on the per-layer chart")
        evaluate("window.scrollTo(0, 0)")
        metrics = b.call("Page.getLayoutMetrics", {}, session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = b.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1},
        }, session)
        with open(png_path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        # Console errors, exceptions, and any request off the file.
        for e in b.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                failures.append(f"uncaught exception: {p['exceptionDetails'].get('text')} "
                                f"{p['exceptionDetails'].get('exception', {}).get('description', '')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                failures.append("console error: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                failures.append(f"console error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent":
                u = p["request"]["url"]
                if u != url and not u.startswith("data:"):
                    failures.append(f"the page requested {u}")
        print(json.dumps({"report": html_path, "screenshot": png_path, "counted": counted}))
    except (TimeoutError, RuntimeError, OSError, KeyError, ValueError) as e:
        print(f"cannot drive chromium: {e}", file=sys.stderr)
        return 2
    finally:
        b.close()
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
