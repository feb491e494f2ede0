"""Opening a page as a person would: Debian's headless Chromium with every host name unresolvable, its DOM,
a screenshot, and the network requests the page itself made (from Chromium's own net log); and the
URLs a page's HTML refers to."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAVIGATION_HEIGHT = 60  # pixels: the site's dark bar, which alone would make any page look "not blank"
BACKGROUND = np.array([250, 250, 250])  # the pages' #fafafa


def require_chromium() -> str:
    """Chromium's path; skips the test where it is not installed, except in CI (.ci/run installs it)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def page_requests(net_log: Path) -> list[str]:
    """URLs the page asked for over the network: requests whose network isolation key is the file://
    page's (Chromium's own update and account probes have none), other than file: and data: URLs."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        from_the_page = event["type"] == start_job and "file://" in str(params.get("network_isolation_key", ""))
        if from_the_page and not str(params.get("url", "")).startswith(("file:", "data:")):
            urls.append(params["url"])
    return urls


@dataclass
class Rendered:
    dom: str               # after parsing (and any script: there should be none)
    requests: list[str]    # what the page fetched from the network: must be empty
    ink: float             # share of the screenshot below the navigation bar that is not background


def open_page(page: Path, profile: Path, *, height: int = 1600) -> Rendered:
    profile.mkdir(parents=True, exist_ok=True)
    uri = page.resolve().as_uri()
    net_log, picture = profile / "net-log.json", profile / "screenshot.png"
    _chromium(profile / "screenshot-profile", f"--log-net-log={net_log}", f"--screenshot={picture}",
              f"--window-size=1280,{height}", uri)
    dom = _chromium(profile / "dom-profile", "--dump-dom", uri).stdout
    pixels = np.asarray(Image.open(picture).convert("RGB"), dtype=np.int16)[NAVIGATION_HEIGHT:]
    ink = float((np.abs(pixels - BACKGROUND).sum(axis=2) > 30).mean())
    return Rendered(dom=dom, requests=page_requests(net_log), ink=ink)


class References(HTMLParser):
    """Every URL a page could load or link to, and every script element."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href", "srcset", "action")]


def external_references(text: str) -> list[str]:
    """URLs that would reach past the project folder: with a scheme other than data:, or protocol-relative.
    CSS too: url(...) and @import in the inline style."""
    parser = References()
    parser.feed(text)
    found = [url for url in parser.urls if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", url) and not url.startswith("data:")]
    found += re.findall(r"url\(\s*['\"]?((?:[a-z]+:)?//[^)'\"]+)", text) + re.findall(r"@import", text)
    return found + ["<script>"] * parser.scripts
