"""The HTML viewer in a real headless browser (Debian's chromium, driven by Playwright): the 3D
view draws, the legend lists every predicted instance, and toggling one in the legend (or switching
to class colours) changes the picture. Chromium is installed with apt-get when missing and this
process may (root); otherwise the test is skipped with the reason."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from engine.pictures.caption import Caption
from engine.pictures.html import render_instances_html
from engine.pictures.summary import InstanceSummary

CHROMIUM_FLAGS = ["--enable-unsafe-swiftshader", "--use-angle=swiftshader"]  # WebGL without a GPU
COLOUR_TOLERANCE = 24  # per channel: WebGL anti-aliasing blends marker edges with the background
LOAD_TIMEOUT_MS = 120_000  # software WebGL on a busy 2-core machine
APT_TIMEOUT_S = 180  # per apt-get command (about 30 s on this project's machines)


def _chromium() -> str:
    """The chromium executable; apt-get installs Debian's when missing and we are root (within
    ``APT_TIMEOUT_S`` a command, so a slow mirror cannot eat the suite's time: then it skips)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and this process cannot apt-get install it (not root or no apt)")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    problem = ""
    for command in (install, ["apt-get", "update"], install):  # an empty package list needs the update
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{' '.join(command)} took over {APT_TIMEOUT_S} s: chromium not installed")
        problem = (done.stderr.strip().splitlines() or [""])[-1]
        if command == install and done.returncode == 0:
            break
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"apt-get could not install chromium: {problem}")
    return found


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (.[test])")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _scene():
    """1,200 points in a 4 x 3 m room: instance 0 fills the left third, instance 1 a corner,
    instance 2 is empty; the rest unassigned."""
    rng = np.random.default_rng(0)
    xyz = rng.random((1200, 3)) * [4.0, 3.0, 1.0]
    masks = np.zeros((3, 1200), bool)
    masks[0] = xyz[:, 0] < 1.3
    masks[1] = (xyz[:, 0] > 3.2) & (xyz[:, 1] > 2.2)
    return xyz, InstanceSummary.of(masks, np.array([5, 7, 39]), np.array([0.9, 0.6, 0.3]))


def _pixels_near(image: np.ndarray, rgb: np.ndarray) -> int:
    return int((np.abs(image.astype(int) - rgb.astype(int)).max(axis=2) <= COLOUR_TOLERANCE).sum())


def _plot_image(page) -> np.ndarray:
    page.wait_for_timeout(500)  # let WebGL finish the frame
    shot = page.locator(".gl-container canvas").first.screenshot()  # the 3D scene only, not the legend
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))


def test_viewer_draws_and_the_legend_toggles_instances(browser, tmp_path):
    xyz, summary = _scene()
    path = render_instances_html(tmp_path / "room.html", xyz, summary, scene="room",
                                 caption=Caption("RANDOM WEIGHTS (seed 0): the instances are meaningless", True))
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(path.as_uri())
    page.wait_for_selector(".gl-container canvas", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_function("document.querySelector('.js-plotly-plot')._fullLayout !== undefined",
                           timeout=LOAD_TIMEOUT_MS)

    legend = page.locator(".legend .traces")
    assert legend.count() == 1 + summary.num_instances  # "unassigned" and every predicted instance
    names = page.locator(".legend .traces .legendtext")  # SVG text
    assert [names.nth(i).text_content() for i in range(1, legend.count())] == [
        f"{summary.label(i)} ({summary.point_counts[i]:,} points)" for i in range(summary.num_instances)]
    assert "RANDOM WEIGHTS" in page.locator(".gtitle").text_content()

    before = _plot_image(page)
    assert (before.min(axis=2) < 200).mean() > 0.02, "the 3D view is blank"
    big, corner = summary.colors[0], summary.colors[1]
    assert _pixels_near(before, big) > 500 and _pixels_near(before, corner) > 50

    legend.nth(1).click()  # hide instance 0
    hidden = _plot_image(page)
    assert _pixels_near(hidden, big) < 0.05 * _pixels_near(before, big), "instance 0 still drawn"
    assert _pixels_near(hidden, corner) > 50, "hiding instance 0 hid others too"

    legend.nth(1).click()  # back
    page.get_by_text("colour by class").click()
    by_class = _plot_image(page)
    assert np.abs(by_class.astype(int) - before.astype(int)).max(axis=2).astype(bool).mean() > 0.01
    page.close()
