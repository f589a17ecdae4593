"""The web page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

Real photos (scikit-image's bundled samples, as `simsearch demo` uses), the default model, a
real `simsearch serve` process. Screenshots are kept in artifacts/ (git-ignored); the README's
docs/screenshot.png is written when missing, or refreshed with SIMSEARCH_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server import start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh installs "
        "them when run as root)",
        allow_module_level=True,
    )

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """scikit-image's sample photos indexed with the default model; and an edited chelsea."""
    from simsearch.db import connect, feature_sets
    from simsearch.demo import edited_copy, sample_photos, write_gallery
    from simsearch.indexing import index

    work = tmp_path_factory.mktemp("browser")
    arrays = sample_photos()
    written = write_gallery(work / "gallery", arrays)
    query = work / "chelsea-edited.jpg"
    edited_copy(arrays["chelsea"]).save(query, "JPEG", quality=95)
    with connect.connect() as conn:
        feature_sets.empty_database(conn)
    index(work / "gallery", feature_set="photos")
    return written, query


@pytest.fixture(scope="module")
def page_url(
    photos: tuple[dict[str, Path], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("browser-server") / "serve.log"
    # No --image-root: the server finds the files under the folder `simsearch index` recorded.
    process, info = start_server("--port", "0", log=log)
    yield info["url"]
    stop_server(process)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[object]:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _first_result(driver: object) -> str | None:
    # Read in the page: the list is re-rendered under us, and element handles go stale.
    script = "const li = document.querySelector('#results li'); return li && li.dataset.objectId"
    return driver.execute_script(script)  # type: ignore[attr-defined, no-any-return]


_IMAGES_LOADED = (
    "return [...document.querySelectorAll('#results img')]"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


def test_upload_a_photo_see_it_found_and_click_through(
    browser: object, page_url: str, photos: tuple[dict[str, Path], Path]
) -> None:
    written, query = photos
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(page_url)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#feature-set option"))
    driver.find_element(By.ID, "file").send_keys(str(query))  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "results from photos"))
    items = driver.find_elements(By.CSS_SELECTOR, "#results li")  # type: ignore[attr-defined]
    assert len(items) == 12
    # The edited copy of the cat finds the cat's original first.
    assert _first_result(driver) == written["chelsea"].name
    assert written["chelsea"].name in items[0].text
    # The map: one thumbnail per result, an axis, the query in the middle.
    assert len(driver.find_elements(By.CSS_SELECTOR, "#map g.hit")) == 12  # type: ignore[attr-defined]
    assert driver.find_elements(By.CSS_SELECTOR, "#map .axis")  # type: ignore[attr-defined]
    wait.until(lambda d: d.execute_script(_IMAGES_LOADED))
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser-upload.png"))  # type: ignore[attr-defined]
    readme_shot = REPO / "docs" / "screenshot.png"
    if readme_shot.parent.is_dir() and (
        not readme_shot.exists() or os.environ.get("SIMSEARCH_UPDATE_SCREENSHOT") == "1"
    ):
        shutil.copyfile(ARTIFACTS / "browser-upload.png", readme_shot)

    # Click the second result: the page searches by it, shown as the query; like `query --id`
    # and simsearch_similar(), the results leave the image itself out.
    second = items[1].get_attribute("data-object-id")
    items[1].find_element(By.TAG_NAME, "button").click()
    wait.until(lambda d: d.find_element(By.ID, "query-caption").text == second)
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "results from photos"))
    shown = [
        li.get_attribute("data-object-id")
        for li in driver.find_elements(By.CSS_SELECTOR, "#results li")
    ]  # type: ignore[attr-defined]
    assert len(shown) == 12 and second not in shown
    driver.save_screenshot(str(ARTIFACTS / "browser-similar.png"))  # type: ignore[attr-defined]


def test_bad_upload_shows_the_servers_error(browser: object, page_url: str, tmp_path: Path) -> None:
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(page_url)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#feature-set option"))
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not a photo")
    driver.find_element(By.ID, "file").send_keys(str(bogus))  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "not an image"))
    status = driver.find_element(By.ID, "status")  # type: ignore[attr-defined]
    assert "error" in status.get_attribute("class")
