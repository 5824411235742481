"""report.html in a real browser: headless Chromium through selenium (slow; ``make test-slow``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``)
and selenium (``pip install selenium``; ``make test-slow`` installs it); skips cleanly without them.
Chromium runs headless, without network features, with a fresh profile.
"""

from __future__ import annotations

import shutil
import time

import pytest

from test_html_report import NAMES, gallery_rows
from bridgeseg.html_report import write_html_report

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("Chromium or its driver is not installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def rows_shown(browser) -> list[list[str]]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#gallery tbody tr')).map("
        "tr => Array.from(tr.children).map(td => td.textContent));")


def wait_for_images(browser, timeout: float = 20.0) -> int:
    """Scroll through the page until every gallery image has loaded; returns how many there are."""
    deadline = time.monotonic() + timeout
    script = ("var images = Array.from(document.querySelectorAll('#gallery img'));"
              "images.forEach(img => img.scrollIntoView());"
              "return [images.length, images.filter(img => img.complete && img.naturalWidth > 0).length];")
    while time.monotonic() < deadline:
        total, loaded = browser.execute_script(script)
        if total == loaded:
            return total
        time.sleep(0.2)
    raise AssertionError(f"only {loaded} of {total} gallery images loaded")


def column(rows, index) -> list[float]:
    """A numeric column of the shown rows; '-' (undefined) as None."""
    return [None if row[index] == "-" else float(row[index]) for row in rows]


def test_report_in_chromium_rows_order_images_filter(tmp_path, browser):
    gallery = gallery_rows(tmp_path, 12)
    page = write_html_report(tmp_path, {}, NAMES, gallery.rows, "browser test")
    browser.get(page.as_uri())
    rows = rows_shown(browser)
    assert len(rows) == 12
    # columns: #, name, pictures, IoU, AP, PQ, true, found; the default order is PQ ascending (worst first)
    assert column(rows, 5) == [float(f"{100 * value:.1f}") for value in sorted(r["pq"] for r in gallery.rows)]
    assert wait_for_images(browser) == 12
    browser.find_element("css selector", "th[data-key='ap']").click()
    ap = column(rows_shown(browser), 4)
    defined = [value for value in ap if value is not None]
    assert defined == sorted(defined) and ap[len(defined):] == [None] * (12 - len(defined))  # undefined last
    browser.find_element("css selector", "th[data-key='ap']").click()
    descending = [value for value in column(rows_shown(browser), 4) if value is not None]
    assert descending == sorted(defined, reverse=True)
    browser.find_element("css selector", "th[data-key='name']").click()
    assert [row[1] for row in rows_shown(browser)] == sorted(row["name"] for row in gallery.rows)
    browser.find_element("css selector", "#class-filter option[value='2']").click()
    squares = sum(2 in row["classes"] for row in gallery.rows)
    assert len(rows_shown(browser)) == squares < 12
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_five_thousand_images_open_quickly_one_page_at_a_time(tmp_path, browser):
    """5,000 rows (a dozen thumbnails, reused): the page is ready in seconds and shows 50 rows at a time."""
    gallery = gallery_rows(tmp_path, 12)
    rows = [dict(gallery.rows[index % 12], name=f"image_{index:04d}", pq=index / 5000, iou=1 - index / 5000)
            for index in range(5000)]
    page = write_html_report(tmp_path, {}, NAMES, rows, "5,000 images")
    started = time.monotonic()
    browser.get(page.as_uri())
    assert len(rows_shown(browser)) == 50
    seconds = time.monotonic() - started
    assert seconds < 5, f"the page took {seconds:.1f} s to open"
    assert browser.find_element("id", "page-info").text == "page 1 of 100 (5000 images)"
    assert [row[1] for row in rows_shown(browser)][:2] == ["image_0000", "image_0001"]
    browser.find_element("id", "next-page").click()
    shown = rows_shown(browser)
    assert shown[0][0] == "51" and shown[0][1] == "image_0050"
    assert wait_for_images(browser) == 50
    browser.find_element("css selector", "th[data-key='iou']").click()
    assert rows_shown(browser)[0][1] == "image_4999"  # lowest IoU first, back on page 1
