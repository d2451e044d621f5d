"""The service's web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): upload,
click on the object, Remove, the mask and result shown at the input's size, a PNG download, and a
server error shown to the user. The server is a real `bentoml serve` (see test_service), without a token.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, expect, sync_playwright

from tests.code.test_service import REAL_MODEL, encode, onnx_dir, scene_image, serve

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# this machine's network is closed: no background fetches, updates or QUIC probes
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/objremoval-page.png")


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> Iterator[str]:
    if not CHROMIUM.is_file():
        reason = f"headless Chromium not installed at {CHROMIUM} (`make browser`, or apt-get install chromium)"
        if os.environ.get("CI"):  # CI installs it (make test): its absence there is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    with serve(onnx_dir(request), tmp_path_factory.mktemp("page")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def natural_size(page, selector: str) -> tuple[int, int]:
    return tuple(page.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]"))


def test_click_remove_show_and_download(browser, server, tmp_path):
    image, (x, y) = scene_image(641, 479)
    file = tmp_path / "scene.png"
    file.write_bytes(encode(image))
    page = browser.new_page(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    problems = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.goto(server + "/")
    expect(page.locator("#class option")).to_have_count(5)  # default + the model's four thing classes
    expect(page.locator("#model")).to_contain_text("object-removal:")

    page.set_input_files("#file", str(file))
    page.wait_for_function("document.getElementById('input').naturalWidth > 0")
    box = page.locator("#input").bounding_box()
    assert box["width"] < 641  # shown scaled down: the click must be mapped back to image pixels
    page.mouse.click(box["x"] + x * box["width"] / 641, box["y"] + y * box["height"] / 479)
    expect(page.locator(".marker")).to_have_count(1)
    page.click("#remove")
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#mask")).to_be_visible()
    page.wait_for_function("['mask', 'result'].every(id => document.getElementById(id).naturalWidth > 0)")
    assert natural_size(page, "#result") == natural_size(page, "#mask") == natural_size(page, "#input") == (641, 479)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    mask_src = page.get_attribute("#mask", "src")
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_src.split(",", 1)[1])))) > 0
    if (REAL_MODEL / "model.json").is_file():  # the tiny test model may find nothing under the click
        assert mask[int(y), int(x)] and "removed" in page.inner_text("#status")
    with page.expect_download() as download:
        page.click("#download")
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"\x89PNG") and Image.open(io.BytesIO(data)).size == (641, 479)
    assert download.value.suggested_filename == "scene-removed.png"
    result = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(result[~mask], image[~mask])  # what the page offers is the service's result
    assert not page.locator("#error").is_visible() and problems == []
    page.close()


def test_a_server_error_is_shown_to_the_user(browser, server, tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("not an image at all")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(file))
    page.click("#remove")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("Error 400")
    expect(page.locator("#error")).to_contain_text("not a recognised image")
    expect(page.locator("#result")).to_be_hidden()
    page.close()


# records the form fields of each fetch the page makes (Playwright does not capture multipart bodies with files)
SPY = """window.__sent = []; const realFetch = window.fetch;
window.fetch = (url, options) => {
  if (options && options.body instanceof FormData)
    window.__sent.push(Object.fromEntries([...options.body.entries()].map(([k, v]) =>
      [k, typeof v === "string" ? v : `file of ${v.size} bytes`])));
  return realFetch(url, options);
};"""


def drag(page, box: dict, path: list[tuple[float, float]], size: tuple[int, int]) -> None:
    """Press, move through `path` (image pixels) and release, on the displayed image `box`."""
    def screen(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * box["width"] / size[0], box["y"] + y * box["height"] / size[1]

    page.mouse.move(*screen(*path[0]))
    page.mouse.down()
    for point in path[1:]:
        page.mouse.move(*screen(*point), steps=8)
    page.mouse.up()


def test_a_painted_mask_is_filled_as_painted(browser, server, tmp_path):
    """Brush: a horizontal stroke 16 px wide (image pixels) from (100, 200) to (300, 200) is sent as the mask
    file; the service fills exactly it (a user mask is taken as given), and nothing outside it changes."""
    image, _ = scene_image(641, 479)
    file = tmp_path / "scene.png"
    file.write_bytes(encode(image))
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.add_init_script(SPY)
    problems = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.goto(server + "/")
    page.set_input_files("#file", str(file))
    page.wait_for_function("document.getElementById('input').naturalWidth > 0")
    page.check("input[name=tool][value=brush]")
    page.fill("#brush", "16")
    box = page.locator("#input").bounding_box()
    drag(page, box, [(100, 200), (200, 200), (300, 200)], (641, 479))
    expect(page.locator("#points-count")).to_contain_text("a painted mask")
    page.click("#remove")
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    (sent,) = page.evaluate("window.__sent")
    assert sent["mask"].startswith("file of") and json.loads(sent["target"]) == {}  # the mask alone
    mask_src = page.get_attribute("#mask", "src")
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_src.split(",", 1)[1])))) > 0
    ys, xs = np.nonzero(mask)
    # the stroke, within a few pixels of screen-to-image rounding: x 92..308, y 192..208
    assert abs(xs.min() - 92) <= 4 and abs(xs.max() - 308) <= 4 and abs(ys.min() - 192) <= 4, (xs.min(), xs.max())
    assert abs(ys.max() - 208) <= 4 and mask[200, 100:301].all() and not mask[:150].any() and not mask[260:].any()
    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(page.get_attribute("#result", "src").split(",")[1]))))
    assert np.array_equal(result[..., :3][~mask], image[~mask]) and problems == []
    page.click("#clear")
    expect(page.locator("#points-count")).to_have_text("")
    page.close()


def test_a_dragged_box_is_sent_as_the_target_box(browser, server, tmp_path):
    image, _ = scene_image(641, 479)
    file = tmp_path / "scene.png"
    file.write_bytes(encode(image))
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.add_init_script(SPY)
    page.goto(server + "/")
    page.set_input_files("#file", str(file))
    page.wait_for_function("document.getElementById('input').naturalWidth > 0")
    page.check("input[name=tool][value=box]")
    box = page.locator("#input").bounding_box()
    drag(page, box, [(420, 300), (150, 60)], (641, 479))  # dragged up and left: the box is normalized
    expect(page.locator("#boxmark")).to_be_visible()
    mark = page.locator("#boxmark").bounding_box()
    assert abs(mark["width"] - 270 * box["width"] / 641) < 3 and abs(mark["height"] - 240 * box["height"] / 479) < 3
    page.click("#remove")
    expect(page.locator("#status")).to_contain_text(re.compile("removed|nothing matched"), timeout=30_000)
    (sent,) = page.evaluate("window.__sent")
    target = json.loads(sent["target"])
    assert "mask" not in sent and "points" not in target
    assert all(abs(a - b) <= 2 for a, b in zip(target["box"], (150, 60, 420, 300), strict=True)), target
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(page.get_attribute("#mask", "src").split(",")[1])))) > 0
    if (REAL_MODEL / "model.json").is_file() and mask.any():  # the box selects objects mostly inside it
        ys, xs = np.nonzero(mask)
        assert xs.min() >= 150 - 40 and xs.max() <= 420 + 40 and ys.min() >= 60 - 40 and ys.max() <= 300 + 40
    page.close()
