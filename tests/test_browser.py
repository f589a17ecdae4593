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

import chromium
import pytest
from test_server import start_server, stop_server

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"

if not chromium.available():
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh installs "
        "them when run as root)",
        allow_module_level=True,
    )

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """scikit-image's sample photos indexed with the default model; and an edited chelsea.

    Two of them also go into feature set 'another', which the menu lists first: the page must
    remember that 'photos' was used last.
    """
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
    (work / "another").mkdir()
    for name in ("rocket", "coffee"):
        shutil.copy(written[name], work / "another" / written[name].name)
    index(work / "another", feature_set="another")
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
    with chromium.headless_driver(tmp_path / "profile") as driver:
        yield driver


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
    Select(driver.find_element(By.ID, "feature-set")).select_by_value("photos")  # type: ignore[attr-defined]
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
    assert driver.execute_script(_OVERLAPS) == [13, []]  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser-upload.png"))  # type: ignore[attr-defined]
    readme_shot = REPO / "docs" / "screenshot.png"
    if readme_shot.parent.is_dir() and (
        not readme_shot.exists() or os.environ.get("SIMSEARCH_UPDATE_SCREENSHOT") == "1"
    ):
        shutil.copyfile(ARTIFACTS / "browser-upload.png", readme_shot)

    # Click the second result: the page searches by it, the image itself left out (as
    # `query --id` and simsearch_similar do).
    second = items[1].get_attribute("data-object-id")
    items[1].find_element(By.TAG_NAME, "button").click()
    similar = _SEARCHES.replace("/search?", "/similar/")
    wait.until(lambda d: d.execute_script(similar) == 1)
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "12 results from photos"))
    shown = "return [...document.querySelectorAll('#results li')].map(li => li.dataset.objectId)"
    ids = driver.execute_script(shown)  # type: ignore[attr-defined]
    assert len(ids) == 12 and second not in ids
    assert driver.find_element(By.ID, "query-caption").text == second  # type: ignore[attr-defined]
    assert driver.execute_script(_OVERLAPS) == [13, []]  # type: ignore[attr-defined]
    driver.save_screenshot(str(ARTIFACTS / "browser-similar.png"))  # type: ignore[attr-defined]


def test_bad_upload_shows_the_servers_error(
    browser: object, page_url: str, photos: tuple[dict[str, Path], Path], tmp_path: Path
) -> None:
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(page_url)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#feature-set option"))
    Select(driver.find_element(By.ID, "feature-set")).select_by_value("photos")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "file").send_keys(str(photos[1]))  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "results from photos"))
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not a photo")
    driver.find_element(By.ID, "file").send_keys(str(bogus))  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "not an image"))
    status = driver.find_element(By.ID, "status")  # type: ignore[attr-defined]
    assert "error" in status.get_attribute("class")
    # The previous photo's results are gone: they are not this file's.
    assert not driver.find_elements(By.CSS_SELECTOR, "#results li")  # type: ignore[attr-defined]
    assert not driver.find_elements(By.CSS_SELECTOR, "#map g.hit")  # type: ignore[attr-defined]


_SEARCHES = (
    "return performance.getEntriesByType('resource')"
    ".filter(e => e.name.includes('/search?')).length"
)

# How many map tiles there are (results and the query), and the pairs of them whose boxes
# intersect, by index: [13, []] for twelve results none of which covers another or the query.
_OVERLAPS = """
const boxes = [...document.querySelectorAll('#map g.hit rect.frame, #map g.query rect.frame')]
  .map(r => r.getBoundingClientRect());
const hits = [];
for (let a = 0; a < boxes.length; a++) for (let b = a + 1; b < boxes.length; b++) {
  const p = boxes[a], q = boxes[b];
  if (p.left < q.right - 0.5 && q.left < p.right - 0.5 && p.top < q.bottom - 0.5 &&
      q.top < p.bottom - 0.5) hits.push([a, b]);
}
return [boxes.length, hits];
"""


def test_controls_search_again_and_the_feature_set_is_remembered(
    browser: object, page_url: str, photos: tuple[dict[str, Path], Path]
) -> None:
    written, query = photos
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(page_url)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#feature-set option"))
    menu = Select(driver.find_element(By.ID, "feature-set"))  # type: ignore[attr-defined]
    assert menu.first_selected_option.get_attribute("value") == "another"  # first, unused yet
    driver.find_element(By.ID, "file").send_keys(str(query))  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "results from another"))

    def searched(count: int, status: str) -> None:
        """Searched again (at least the count-th search), and showing what it found."""
        wait.until(lambda d: d.execute_script(_SEARCHES) >= count)
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), status))

    menu.select_by_value("photos")  # the feature set: searched again, with it
    searched(2, "12 results from photos")
    assert _first_result(driver) == written["chelsea"].name
    count = driver.find_element(By.ID, "n")  # type: ignore[attr-defined]
    count.send_keys(Keys.CONTROL, "a")
    count.send_keys("5", Keys.TAB)  # the number of results
    searched(3, "5 results from photos")
    driver.find_element(By.ID, "exact").click()  # type: ignore[attr-defined]
    searched(4, "5 results from photos")
    where = driver.find_element(By.ID, "where")  # type: ignore[attr-defined]
    where.send_keys("width>=100000", Keys.ENTER)  # where: no photo is that wide
    searched(5, "0 results from photos")
    assert not driver.find_elements(By.CSS_SELECTOR, "#results li")  # type: ignore[attr-defined]

    driver.refresh()  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#feature-set option"))
    menu = Select(driver.find_element(By.ID, "feature-set"))  # type: ignore[attr-defined]
    assert menu.first_selected_option.get_attribute("value") == "photos"  # the one used last
