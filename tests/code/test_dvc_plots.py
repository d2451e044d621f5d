"""`make plots`: `dvc plots show` with the local template (plots/template.html) renders offline. A temporary DVC
project holds this repository's plot definitions (dvc.yaml's top-level `plots`) with a few rows of data each;
`make plots` writes the page and copies vega, vega-lite and vega-embed (from the npm registry, via
plots/package-lock.json) beside it; headless Chromium, with every request off the file system refused,
draws every chart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def project(tmp_path) -> tuple[Path, list[str]]:
    """A DVC project with this repository's plot definitions and data for each; the plot files' names."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    for entry in plots:
        [(file, spec)] = entry.items()
        ys = spec["y"] if isinstance(spec["y"], list) else [spec["y"]]
        rows = [{spec["x"]: step, **{y: 20.0 + step + i for i, y in enumerate(ys)}} for step in range(4)]
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(json.dumps(rows))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True, timeout=120)
    return tmp_path, [next(iter(e)) for e in plots]


def test_make_plots_writes_a_page_that_draws_every_chart_offline(project):
    if shutil.which("npm") is None:
        pytest.skip("npm not installed (apt-get install npm)")
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"headless Chromium not installed at {CHROMIUM}")
        pytest.skip(f"headless Chromium not installed at {CHROMIUM} (`make browser`)")
    from playwright.sync_api import sync_playwright

    root, files = project
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "plots", "PLOTS_OUT=out",
                           f"VENV={Path(sys.executable).parent.parent}"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    page_file = root / "out" / "index.html"
    html = page_file.read_text()
    assert "cdn.jsdelivr.net" not in html and "vendor/vega-embed.min.js" in html
    assert {p.name for p in (root / "out" / "vendor").iterdir()} == {"vega.min.js", "vega-lite.min.js",
                                                                    "vega-embed.min.js"}

    refused, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else (refused.append(route.request.url), route.abort()))
            page.goto(page_file.as_uri())
            charts = page.locator(".vega-embed")
            charts.first.wait_for(timeout=30_000)
            page.wait_for_function(f"document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks')"
                                   f".length >= {len(files)}", timeout=30_000)
            drawn = page.evaluate("[...document.querySelectorAll('.vega-embed canvas')]"
                                  ".map(c => c.width * c.height)")
            count = charts.count()
        finally:
            browser.close()
    assert refused == [] and errors == []
    assert count >= len(files) and len(drawn) >= len(files) and min(drawn) > 10_000
