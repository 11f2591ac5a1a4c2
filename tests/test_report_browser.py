"""The report in a real browser: headless Chromium opens it from disk, with no console
errors and no network requests, and takes a screenshot.

Chromium is driven over its DevTools protocol through a pipe (--remote-debugging-pipe:
JSON messages separated by NUL bytes on file descriptors 3 and 4, the transport
Playwright uses), so no Python package beyond the standard library is needed. Needs the
`chromium` Debian package (.ci/run installs it); skipped without it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from test_report import make_scores

from synccurate.curate import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # should the page ask for a host, it fails at once
)
TIMEOUT_S = 60.0

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def descriptors() -> None:  # in the child: our pipe ends become fds 3 and 4
            read, write = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=descriptors,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], deadline - time.monotonic())
            if not ready:
                raise TimeoutError("no answer from chromium")
            data = os.read(self._from_browser, 1 << 20)
            if not data:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def problems(events: list[dict]) -> list[str]:
    """Console errors/warnings, uncaught exceptions, failed loads and network requests."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
            found.append(f"console.{params['type']}: {params['args']}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            found.append(f"log {params['entry']['level']}: {params['entry']['text']}")
        elif method == "Network.loadingFailed":
            found.append(f"failed load: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:")):
                found.append(f"network request: {url}")
    return found


def test_report_opens_in_headless_chromium_without_errors_or_network(tmp_path):
    scores, _ = make_scores(tmp_path, with_clip=True)
    page = tmp_path / "report.html"
    report.write_report(scores, page)
    browser = Browser(tmp_path / "profile")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.page(f"{domain}.enable")
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.page("Page.navigate", url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        checks = browser.page(
            "Runtime.evaluate",
            returnByValue=True,
            expression="""({
                clips: JSON.parse(document.getElementById('summary').textContent).n_clips,
                images: document.images.length,
                decoded: Array.from(document.images).every(i => i.complete && i.naturalWidth > 0),
                bars: document.querySelectorAll('rect.bar').length,
                height: document.documentElement.scrollHeight,
            })""",
        )["result"]["value"]
        height = min(int(checks["height"]), 8000)
        shot = browser.page(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1},
        )
    finally:
        browser.close()
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))

    assert problems(browser.events) == []
    requests = [e for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert [r["params"]["request"]["url"] for r in requests][:1] == [page.as_uri()]
    assert checks["clips"] == len(pd.read_parquet(scores))
    assert checks["images"] >= 1 and checks["decoded"], checks  # the real clip's thumbnail
    assert checks["bars"] > 20
    assert (
        screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    )


def test_the_checks_catch_a_network_request_and_a_console_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="https://example.invalid/x.png"><script>console.error("bad")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    browser = Browser(tmp_path / "profile")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.page(f"{domain}.enable")
        browser.page("Page.navigate", url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
    finally:
        browser.close()
    found = problems(browser.events)
    assert any(p.startswith("network request: https://example.invalid/") for p in found), found
    assert any(p.startswith("console.error") for p in found), found
