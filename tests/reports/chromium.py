"""A small Chrome DevTools Protocol client for headless Chromium, over `--remote-debugging-pipe`.

The pipe transport (NUL-terminated JSON messages on file descriptors 3 and 4, as Puppeteer's pipe
mode uses) needs no websocket library and no open port. Network is cut with a dead proxy, so a page
that tried to fetch its JavaScript from a CDN would fail, and the failure would show up in `errors`.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--hide-scrollbars", "--remote-debugging-pipe",
)


def chromium_path() -> str | None:
    """The Chromium executable on PATH (Debian's package installs `chromium`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Page:
    """One tab attached with a flat CDP session; `errors` collects console errors, exceptions and failed loads."""

    browser: Browser
    session_id: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def send(self, method: str, params: dict | None = None, timeout_s: float = 60.0) -> dict:
        return self.browser.send(method, params, session_id=self.session_id, timeout_s=timeout_s)

    def open(self, url: str, timeout_s: float = 60.0) -> None:
        """Navigate and wait for the load event."""
        self.send("Page.navigate", {"url": url})
        self.browser.wait_for_event("Page.loadEventFired", self.session_id, timeout_s)

    def evaluate(self, expression: str) -> object:
        """The JSON value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> object:
        """Poll until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.browser.pump(0.1)
        raise TimeoutError(f"timed out after {timeout_s} s waiting for {expression}")

    def screenshot(self, path: Path, clip: dict) -> None:
        """Save a PNG of the page region `clip` ({x, y, width, height} in CSS pixels of the document)."""
        result = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}})
        path.write_bytes(base64.b64decode(result["data"]))


class Browser:
    """A headless Chromium process driven over the CDP pipe; use as a context manager."""

    def __init__(self, executable: str, width: int = 1400, height: int = 1000) -> None:
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_pipes() -> None:  # in the child: CDP reads fd 3 and writes fd 4
            # dup first, so that moving one pipe onto 3 or 4 cannot overwrite the other
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            preexec_fn=wire_pipes, pass_fds=(3, 4),  # kept open in the child after wire_pipes
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self._pages: dict[str, Page] = {}
        self._size = (width, height)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout_s=5)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def new_page(self) -> Page:
        """A fresh tab with console, exception and network-failure capture enabled."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        width, height = self._size
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    def send(self, method: str, params: dict | None = None, session_id: str | None = None,
             timeout_s: float = 60.0) -> dict:
        """Send one command and return its result; events that arrive meanwhile are recorded."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method} failed: {reply['error']}")
                    return reply.get("result", {})

    def wait_for_event(self, method: str, session_id: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session_id:
                    return self._events.pop(i)
            list(self._read(deadline))

    def pump(self, seconds: float) -> None:
        """Read events for a while (so console messages are recorded while waiting)."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                list(self._read(deadline))
        except TimeoutError:
            pass

    def _read(self, deadline: float):
        """Yield the replies of one read from the pipe, recording events."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("Chromium did not answer in time")
        ready, _, _ = select.select([self._from_chrome], [], [], remaining)
        if not ready:
            raise TimeoutError("Chromium did not answer in time")
        chunk = os.read(self._from_chrome, 1 << 20)
        if not chunk:
            raise OSError(f"Chromium closed the DevTools pipe (exit status {self._process.poll()})")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "method" in message:
                self._record(message)
                if message["method"].startswith("Page."):  # the only events anyone waits for
                    self._events.append(message)
            yield message

    def _record(self, event: dict) -> None:
        page = self._pages.get(event.get("sessionId", ""))
        if page is None:
            return
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            (page.errors if params["type"] != "warning" else page.warnings).append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            page.errors.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            page.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
