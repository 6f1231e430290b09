"""The step-through view in a real browser: Debian's chromium, driven over WebDriver.

The test starts ``chromedriver`` itself, which starts a headless chromium with a
fresh profile and no network services; it opens the page written by
``dmabuf-sim scenarios run ... --html``, steps through it with the buttons and
the arrow keys, switches the spec, and at every step compares the DOM with the
frames the page was made from.  A screenshot is kept in the test's tmp dir.
Only the standard library talks to the driver (urllib, JSON).

Skipped where chromium or chromium-driver is not installed
(``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmabuf_sim.cli import main
from dmabuf_sim.stepview import Frame, walkthrough

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs a real browser: apt-get install chromium chromium-driver",
)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key
ARROW_LEFT, ARROW_RIGHT = "\ue012", "\ue014"
STARTUP_LIMIT = 60.0
"""Seconds chromedriver may take to say it listens (an upper bound, not a measurement)."""


class WebDriver:
    """The few W3C WebDriver commands the test needs, over HTTP."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def cmd(self, method: str, path: str, body: Any = None) -> Any:
        return self.call(method, f"/session/{self.session}{path}", body)

    def find(self, css: str) -> str:
        return str(self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return str(self.cmd("GET", f"/element/{self.find(css)}/text"))

    def js(self, script: str, *args: Any) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def key(self, key: str) -> None:
        actions = [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self.cmd("POST", "/actions", {"actions": [{"type": "key", "id": "kb", "actions": actions}]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    port = _free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert driver.stdout is not None
        guard = threading.Timer(STARTUP_LIMIT, driver.kill)  # a hung driver ends the test
        guard.start()
        try:
            said = ""
            while "started successfully" not in said:
                line = driver.stdout.readline()
                assert line, f"chromedriver did not start: {said}"
                said += line
        finally:
            guard.cancel()
        threading.Thread(target=driver.stdout.read, daemon=True).start()  # keep the pipe drained
        wd = WebDriver(port)
        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,1000",
        ]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        wd.session = wd.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})[
            "sessionId"
        ]
        try:
            yield wd
        finally:
            wd.call("DELETE", f"/session/{wd.session}")
    finally:
        driver.terminate()
        driver.wait(timeout=30)


def assert_shows(wd: WebDriver, frame: Frame, index: int, count: int) -> None:
    """The DOM shows ``frame`` as step ``index`` of ``count``."""
    state = wd.js(
        """
        const $ = (id) => document.getElementById(id);
        return {
          counter: $("counter").textContent,
          call: $("call").textContent,
          alert: $("call").className,
          narration: $("narration").textContent,
          effects: [...$("effects").children].map((li) => li.textContent),
          trace: $("trace").textContent,
          changed: [...$("picture").querySelectorAll("g.changed")].map((g) => g.id).sort(),
          svgs: $("picture").querySelectorAll("svg").length,
          current: [...$("timeline").children].findIndex((li) => li.classList.contains("current")),
          prev: $("prev").disabled,
          next: $("next").disabled,
        };
        """
    )
    assert state["counter"] == f"Step {index + 1} of {count}"
    assert state["call"] == frame.call
    assert (state["alert"] == "alert") == frame.alert
    assert state["narration"] == frame.narration
    assert state["effects"] == list(frame.effects)
    assert state["trace"] == (frame.trace or "(no kernel function ran)")
    assert state["changed"] == sorted(frame.changed)
    assert state["svgs"] == (1 if frame.graph is not None else 0)
    assert state["current"] == index
    assert state["prev"] == (index == 0) and state["next"] == (index == count - 1)


def test_step_through_a_scenario_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    """R26 on v3.5 vs v6.12, stepped through: every step's DOM matches its frame."""
    page = tmp_path / "two-buffers.html"
    args = ["scenarios", "run", "two-buffers", "--exporter", "shared_file_zap", "--spec", "v6.12"]
    assert main([*args, "--html", str(page)]) == 0
    view = walkthrough("two-buffers", "shared_file_zap", default_spec="v6.12")
    wd = browser
    wd.call("POST", f"/session/{wd.session}/url", {"url": page.resolve().as_uri()})
    offline = wd.js("return performance.getEntriesByType('resource').map((r) => r.name);")
    assert offline == []  # one self-contained file: nothing else is fetched
    assert wd.text("#status") == "v6.12: passed"
    frames = view.runs["v6.12"].frames
    assert_shows(wd, frames[0], 0, len(frames))
    for i in range(1, len(frames)):  # forward with the button
        wd.click("#next")
        assert_shows(wd, frames[i], i, len(frames))
    for i in range(len(frames) - 2, len(frames) - 5, -1):  # back with the arrow key
        wd.key(ARROW_LEFT)
        assert_shows(wd, frames[i], i, len(frames))
    wd.key(ARROW_RIGHT)
    assert_shows(wd, frames[len(frames) - 3], len(frames) - 3, len(frames))
    # the kernel trace is collapsed until asked for
    assert wd.js("return document.getElementById('trace-box').open;") is False
    wd.click("#trace-summary")
    assert wd.js("return document.getElementById('trace-box').open;") is True
    # another kernel: the same story ends with the bug (R26)
    wd.click('#spec option[value="v3.5"]')
    old = view.runs["v3.5"].frames
    assert wd.text("#status") == "v3.5: failed"
    shown = min(len(frames) - 3, len(old) - 1)  # the step index is kept where it exists
    assert_shows(wd, old[shown], shown, len(old))
    wd.click("#last")
    assert_shows(wd, old[-1], len(old) - 1, len(old))
    ending = wd.text("#endings tr.current")
    assert (
        ending.startswith("v3.5")
        and "SAN-OTHER-BUFFER violated" in ending
        and "(R26, R56)" in ending
    )
    zap = next(i for i, f in enumerate(old) if "shot down 4 PTEs in 2 vmas" in f.narration)
    wd.click(f"#timeline li:nth-child({zap + 1})")
    assert_shows(wd, old[zap], zap, len(old))
    assert wd.js("return location.hash;") == f"#spec=v3.5&step={zap + 1}"  # a link to this step
    wd.call(
        "POST",
        f"/session/{wd.session}/url",
        {"url": page.resolve().as_uri() + "#spec=v6.12&step=2"},
    )
    assert_shows(wd, frames[1], 1, len(frames))
    wd.call(
        "POST",
        f"/session/{wd.session}/url",
        {"url": page.resolve().as_uri() + f"#spec=v3.5&step={zap + 1}"},
    )
    assert_shows(wd, old[zap], zap, len(old))
    shot = base64.b64decode(wd.cmd("GET", "/screenshot"))
    screenshot = tmp_path / "two-buffers-v3.5.png"
    screenshot.write_bytes(shot)
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and os.path.getsize(screenshot) > 10_000
