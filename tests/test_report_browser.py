"""The report in a real browser: headless Chromium opens it from disk, with no console
errors and no network requests, and takes a screenshot; a page built from rows that
synthetic-only weights scored on real clips opens with its banner, on screen.

Chromium is driven by Selenium through chromedriver: the Debian `chromium` and
`chromium-driver` packages (.ci/run installs them) and the `selenium` package of the `dev`
extra. Both paths are given explicitly, so Selenium Manager never looks for (or downloads)
a browser or a driver. Skipped, saying which, when any of the three is missing.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from test_report import make_scores

from synccurate.curate import report
from synccurate.io.files import write_table

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # the dev extra is not installed
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # should the page ask for a host, it fails at once
)
WIDTH, HEIGHT = 1280, 900  # the viewport
TIMEOUT_S = 60
FLAG = "synthetic_weights_on_real"

pytestmark = [
    pytest.mark.skipif(
        webdriver is None, reason="selenium is not installed (pip install -e '.[dev]')"
    ),
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        CHROMEDRIVER is None,
        reason="chromedriver is not installed (apt-get install chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One headless Chromium for the module; `visit` clears its logs before each page."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    # browser: console messages, uncaught exceptions, failed loads; performance: the
    # DevTools Network.* events of the page
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        chrome.set_page_load_timeout(TIMEOUT_S)
        chrome.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        yield chrome
    finally:
        chrome.quit()


def visit(chrome, page: Path) -> tuple[list[dict], list[tuple[str, dict]]]:
    """Open `page` and wait for its load event: its browser log entries and network events."""
    chrome.get_log("browser")  # reading a log empties it: nothing of an earlier page is left
    chrome.get_log("performance")
    chrome.get(page.as_uri())
    logs = chrome.get_log("browser")
    events = []
    for entry in chrome.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"].startswith("Network."):
            events.append((message["method"], message.get("params", {})))
    return logs, events


def problems(logs: list[dict], events: list[tuple[str, dict]]) -> list[str]:
    """Console errors/warnings, uncaught exceptions, failed loads and network requests."""
    found = [
        f"log {entry['level']}: {entry['message']}"
        for entry in logs
        if entry["level"] in ("SEVERE", "WARNING")
    ]
    for method, params in events:
        if method == "Network.loadingFailed":
            found.append(f"failed load: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:")):
                found.append(f"network request: {url}")
    return found


def screenshot(chrome, path: Path, height: int) -> np.ndarray:
    """The page's top `height` pixels (beyond the viewport) as a PNG at `path`, decoded."""
    shot = chrome.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (height, WIDTH), (
        None if image is None else image.shape
    )
    return image


def pixel(image: np.ndarray, x: float, y: float) -> tuple[int, int, int]:
    """The RGB colour at page coordinates (x, y) of a screenshot taken from the top."""
    blue, green, red = (int(v) for v in image[int(y), int(x)])
    return red, green, blue


def near(image: np.ndarray, x: float, y: float, rgb: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(pixel(image, x, y), rgb, strict=True)) <= 8


@pytest.mark.parametrize("flagged", [False, True], ids=["clean", "synthetic-weights-on-real"])
def test_report_opens_in_headless_chromium_without_errors_or_network(driver, tmp_path, flagged):
    scores, frame = make_scores(tmp_path, with_clip=True)
    if flagged:  # one row scored by synthetic-only weights on a real clip
        frame[FLAG] = pd.array([i == 0 for i in range(len(frame))], dtype="boolean")
        write_table(frame, scores)
    page = tmp_path / "report.html"
    report.write_report(scores, page)

    logs, events = visit(driver, page)
    checks = driver.execute_script(
        """return {
            clips: JSON.parse(document.getElementById('summary').textContent).n_clips,
            images: document.images.length,
            decoded: Array.from(document.images).every(i => i.complete && i.naturalWidth > 0),
            bars: document.querySelectorAll('rect.bar').length,
            height: document.documentElement.scrollHeight,
            totals: Array.from(document.querySelectorAll('h2'))
                .find(h => h.textContent === 'Totals').getBoundingClientRect().top,
            viewport: [window.innerWidth, window.innerHeight],
        }"""
    )
    height = min(int(checks["height"]), 8000)
    image = screenshot(driver, tmp_path / "report.png", height)

    assert problems(logs, events) == []
    requests = [p["request"]["url"] for m, p in events if m == "Network.requestWillBeSent"]
    assert requests[:1] == [page.as_uri()]  # the page itself: the network log works
    assert checks["viewport"] == [WIDTH, HEIGHT]
    assert checks["clips"] == len(pd.read_parquet(scores))
    assert checks["images"] >= 1 and checks["decoded"], checks  # the real clip's thumbnail
    assert checks["bars"] > 20

    banners = driver.find_elements(By.ID, "synthetic-banner")
    if not flagged:
        assert banners == []
        return
    assert len(banners) == 1 and banners[0].is_displayed()
    box = banners[0].rect
    assert "mean nothing" in banners[0].text and "1 of" in banners[0].text
    # at the top: above the first section, on the first screen, and so in the screenshot
    assert box["y"] < checks["totals"] and box["y"] + box["height"] <= HEIGHT, (box, checks)
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box
    # and drawn there: its red left border and pink background (.banner in report.CSS)
    middle = box["y"] + box["height"] / 2
    border = (box["x"] + 3, middle)
    background = (box["x"] + box["width"] - 4, box["y"] + 3)  # in its padding: no text
    assert near(image, *border, (0xC6, 0x28, 0x28)), pixel(image, *border)
    assert near(image, *background, (0xFD, 0xE8, 0xE8)), pixel(image, *background)


def test_the_checks_catch_a_network_request_and_a_console_error(driver, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="https://example.invalid/x.png"><script>console.error("bad")</script>'
        '<script>throw new Error("boom")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    found = problems(*visit(driver, page))
    assert any(p.startswith("network request: https://example.invalid/") for p in found), found
    assert any(p.startswith("log SEVERE") and '"bad"' in p for p in found), found
    assert any(p.startswith("log SEVERE") and "boom" in p for p in found), found
    assert any(p.startswith("failed load: net::ERR_NAME_NOT_RESOLVED") for p in found), found
