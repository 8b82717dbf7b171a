"""The built site in a real browser: Debian's chromium, headless, driven by selenium with the system driver.

The browser is installed with apt-get when it is missing and the test runs as root; the tests skip, saying why,
only where no browser can be installed. Screenshots of the index and of one dataset page are written to
``$NEOKD_SCREENSHOTS`` when it is set (CI keeps them), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from neokd_bench.leaderboard.site import build

from .conftest import reference_files, write_json
from .hostile import NAME, TEXT_PAYLOADS, hostile_result

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _find() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    return browser, shutil.which("chromedriver")


def _install() -> str:
    """Try apt-get (Debian's chromium and chromium-driver); return why it could not, or ''."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not root, so apt-get cannot install chromium (run: sudo apt-get install chromium chromium-driver)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium", "chromium-driver"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
    return ""


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    browser, drv = _find()
    if not (browser and drv):
        why = _install()
        browser, drv = _find()
        if not (browser and drv):
            pytest.skip(f"no headless browser could be installed: {why or 'chromium or chromedriver still missing'}")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    d = webdriver.Chrome(options=opts, service=Service(drv))
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _no_alert(d) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        _ = d.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_a_table_value_in_the_browser_equals_the_result_file(driver, tmp_path):
    src = reference_files()[0]
    doc = json.loads(src.read_text())
    write_json(tmp_path / "res" / src.name, doc)
    build([tmp_path / "res"], tmp_path / "site")
    driver.get((tmp_path / "site" / "index.html").as_uri())
    label = "pgd:max-average"
    cell = driver.find_element(
        "css selector", f'table[data-attack="{label}"] tr.entry td[data-metric="{label}"][data-exit="1"]')
    shown = cell.text.split("\n")[0]
    expected = doc["evaluation"]["anytime"]["adversarial"][label]["top1"]["mean"][1]
    assert shown == f"{100 * expected:.2f}"
    clean = driver.find_element("css selector", f'table[data-attack="{label}"] td[data-metric="clean"][data-exit="0"]')
    assert clean.text.split("\n")[0] == f"{100 * doc['evaluation']['anytime']['clean']['top1']['per_exit'][0]:.2f}"


def test_hostile_strings_run_nothing_and_show_as_text(driver, tmp_path):
    doc = json.loads(reference_files()[0].read_text())
    write_json(tmp_path / "res" / "evil-s0.json", hostile_result(doc))
    build([tmp_path / "res"], tmp_path / "site")
    site = tmp_path / "site"
    pages = [site / "index.html", *sorted(site.glob("fashion-mnist-*.html")), *sorted((site / "entry").glob("*.html"))]
    seen = ""
    for page in pages:
        driver.get(page.as_uri())
        driver.execute_script("return 1")  # wait for the page's own scripts (there are none)
        assert _no_alert(driver), f"a dialog opened on {page.name}"
        assert driver.execute_script("return window.__pwned === undefined"), page.name
        assert driver.execute_script("return document.body.getAttribute('data-pwned')") is None, page.name
        assert driver.execute_script("return document.querySelectorAll('script, iframe, img[src=x], svg').length") == 0
        seen += driver.execute_script("return document.body.innerText") + "\n"
    assert NAME in seen
    for p in TEXT_PAYLOADS:  # assumptions are shown verbatim; config values as JSON strings
        assert p in seen, p
        assert json.dumps(p, ensure_ascii=False) in seen, p


def test_screenshots_of_the_index_and_a_dataset_page(driver, tmp_path):
    build([reference_files()[0].parent], tmp_path / "site")
    out = Path(os.environ.get("NEOKD_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    dataset_page = next((tmp_path / "site").glob("fashion-mnist-*.html")).name
    for name, page in (("index", "index.html"), ("dataset", dataset_page)):
        driver.set_window_size(1400, 1000)
        driver.get((tmp_path / "site" / page).as_uri())
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(int(height) + 100, 4000))
        assert driver.save_screenshot(str(out / f"{name}.png"))
        assert (out / f"{name}.png").stat().st_size > 10_000
    driver.get((tmp_path / "site" / "index.html").as_uri())
    assert driver.execute_script("return document.styleSheets.length") == 1  # the local stylesheet loaded
    imgs = driver.execute_script(
        "return Array.from(document.images).map(i => i.naturalWidth)")
    assert imgs == []  # the index has tables only
    driver.get((tmp_path / "site" / next((tmp_path / "site").glob("fashion-mnist-*.html")).name).as_uri())
    widths = driver.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth)")
    assert widths and all(w and w > 0 for w in widths)  # every local SVG figure loaded
