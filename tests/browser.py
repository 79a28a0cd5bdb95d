"""Render an HTML file in headless Chromium and report what a reader would see: images decoded, errors raised.

A probe script is inserted as the first element of <head> (ahead of the page's own Content-Security-Policy, so
the page's policy still governs everything the page itself loads). After the load event it draws every
<img> onto a canvas (which forces a decode) and writes the results, plus any error, console.error or CSP violation seen since the start, into
a <pre id="oncofed-probe"> element; `--dump-dom` prints the DOM and we read the element back. A second run
takes a full-page screenshot to look at.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")

PROBE = """<script>
(function () {
  var problems = [];
  window.addEventListener("error", function (event) {
    var target = event.target && event.target.tagName ? event.target.tagName + " " +
      (event.target.src || event.target.href || "") : "";
    problems.push("error: " + (event.message || ("failed to load " + target)));
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    problems.push("unhandled rejection: " + event.reason);
  });
  document.addEventListener("securitypolicyviolation", function (event) {
    problems.push("CSP violation: " + event.violatedDirective + " " + event.blockedURI);
  });
  var originalError = console.error;
  console.error = function () {
    problems.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return originalError.apply(console, arguments);
  };
  function painted(img) {
    // Drawing the image onto a canvas forces a decode; a decoded image has at least one visible pixel.
    try {
      var canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      var context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (var k = 3; k < pixels.length; k += 4) { if (pixels[k] > 0) { return true; } }
      return false;
    } catch (error) {
      problems.push("image check failed: " + error);
      return false;
    }
  }
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var report = {
      title: document.title,
      height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
      images: images.map(function (img) {
        var ready = img.complete && img.naturalWidth > 0;
        return {alt: img.alt, decoded: ready && painted(img), complete: img.complete,
                naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                inline: img.src.indexOf("data:") === 0};
      }),
      errors: problems
    };
    var out = document.createElement("pre");
    out.id = "oncofed-probe";
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  });
})();
</script>"""


@dataclass
class PageCheck:
    """What the browser saw."""

    title: str
    height: int
    images: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not (i["decoded"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0)]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None (tests then skip with that reason)."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def _run(chromium: str, profile: Path, arguments: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def check_page(html_path: str | Path, screenshot_path: str | Path | None = None, timeout: float = 90) -> PageCheck:
    """Load the page in headless Chromium; return images and errors, and optionally save a full-page PNG."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found at " + ", ".join(CHROMIUM_CANDIDATES))
    page = Path(html_path).read_text(encoding="utf-8")
    probed, count = re.subn(r"<head>", "<head>" + PROBE, page, count=1, flags=re.IGNORECASE)
    if count != 1:
        raise ValueError(f"{html_path} has no <head> to put the probe in")
    with tempfile.TemporaryDirectory(prefix="oncofed-browser-") as work:
        work_dir = Path(work)
        probe_page = work_dir / "page.html"
        probe_page.write_text(probed, encoding="utf-8")
        result = _run(chromium, work_dir / "profile",
                      ["--window-size=1280,900", "--virtual-time-budget=15000", "--dump-dom", probe_page.as_uri()], timeout)
        found = re.search(r'<pre id="oncofed-probe">(.*?)</pre>', result.stdout, flags=re.DOTALL)
        if found is None:
            raise RuntimeError(f"Chromium did not finish the page (exit {result.returncode}); stderr tail:\n"
                               f"{result.stderr[-2000:]}")
        report = json.loads(html.unescape(found.group(1)))
        if screenshot_path is not None:
            height = min(max(int(report["height"]), 600), 16000)
            _run(chromium, work_dir / "profile-shot",
                 [f"--window-size=1280,{height}", f"--screenshot={Path(screenshot_path).resolve()}",
                  Path(html_path).resolve().as_uri()], timeout)
    return PageCheck(title=report["title"], height=int(report["height"]), images=report["images"],
                     errors=report["errors"])


IMAGES_PAINTED = """(function () {
  return Array.prototype.map.call(document.images, function (img) {
    var ok = img.complete && img.naturalWidth > 0, painted = false;
    if (ok) {
      var canvas = document.createElement("canvas"); canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      var context = canvas.getContext("2d"); context.drawImage(img, 0, 0);
      var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (var k = 3; k < pixels.length; k += 4) { if (pixels[k] > 0) { painted = true; break; } }
    }
    return {alt: img.alt, className: img.className, decoded: painted, naturalWidth: img.naturalWidth,
            inline: img.src.indexOf("data:") === 0};
  });
})()"""


class ChromiumSession:
    """Headless Chromium driven over the DevTools protocol, for pages a reader clicks through.

    `--dump-dom` (check_page) only loads a page; a served page whose content appears after a click needs a
    live browser: we start Chromium with a debugging port bound to localhost, talk to its page over a
    websocket (the `websockets` package), and record uncaught exceptions, console errors and CSP reports
    (Runtime and Log domains) in `errors`.
    """

    def __init__(self, timeout: float = 90) -> None:
        self.timeout = timeout
        self.errors: list[str] = []
        self._next_id = 0

    def __enter__(self) -> ChromiumSession:
        import time
        import urllib.request

        from websockets.sync.client import connect

        chromium = find_chromium()
        if chromium is None:
            raise FileNotFoundError("no Chromium found at " + ", ".join(CHROMIUM_CANDIDATES))
        self._stack = contextlib.ExitStack()
        self._work = tempfile.TemporaryDirectory(prefix="oncofed-cdp-")
        profile = Path(self._work.name) / "profile"
        self._process = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900",
                                          "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                          "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)  # its own process group: __exit__ ends every helper
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + self.timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError("Chromium did not open its debugging port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as answer:
            targets = json.loads(answer.read())
        page = next(t for t in targets if t.get("type") == "page")
        self._socket = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None,
                                                         open_timeout=self.timeout))
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        """End Chromium and every helper process it started (they write to the profile until they exit)."""
        self._stack.close()
        self._signal_group(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        self._process.wait()
        self._work.cleanup()

    def _signal_group(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, number)

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append("log: " + params["entry"].get("text", ""))

    def call(self, method: str, **params: object) -> dict:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=self.timeout))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> object:
        """Poll a JS expression until it is truthy; return its value."""
        import time

        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"the page never satisfied {expression!r}; errors seen: {self.errors}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def images(self) -> list[dict]:
        return list(self.evaluate(IMAGES_PAINTED) or [])


def rendered_report(html_path: Path, screenshot_path: Path, images: int) -> PageCheck:
    """A report page as every report must render: no error, `images` pictures all decoded inline, a screenshot
    worth looking at. Skips the calling test where Chromium is not installed."""
    import pytest

    if find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); CI installs it")
    page = check_page(html_path, screenshot_path=screenshot_path)
    assert page.errors == []
    assert len(page.images) == images and page.broken_images == []
    assert all(image["inline"] for image in page.images)
    assert screenshot_path.stat().st_size > 10_000
    return page
