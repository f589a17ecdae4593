"""GET /duplicates and the page's Duplicates view, on a real `simsearch serve` with real photos:
scikit-image's samples and a JPEG quality-40 copy of twelve of them (twelve groups, two pages
of ten), in headless Chromium as tests/test_browser.py drives it."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromium
import pytest
from PIL import Image
from test_server import start_server, stop_server

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
COPIED = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry",
    "brick",
    "retina", "gravel", "page",
)  # fmt: skip


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from simsearch.db import connect, feature_sets
    from simsearch.demo import sample_photos, write_gallery
    from simsearch.indexing import index

    work = tmp_path_factory.mktemp("dup-page")
    arrays = sample_photos()
    write_gallery(work / "gallery", arrays)
    (work / "gallery" / "copies").mkdir()
    for name in COPIED:
        Image.fromarray(arrays[name]).save(work / "gallery" / "copies" / f"{name}.jpg", quality=40)
    with connect.connect() as conn:
        feature_sets.empty_database(conn)
    index(work / "gallery", feature_set="photos")
    process, info = start_server("--port", "0", log=work / "serve.log")
    try:
        yield str(info["url"]).rstrip("/")
    finally:
        stop_server(process)


def get(url: str) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_api_pages_through_the_groups(server_url: str) -> None:
    status, first = get(f"{server_url}/duplicates?per_page=5")
    assert status == 200, first
    assert first["feature_set"] == "photos" and first["level"] == "strict"
    assert first["total_groups"] == len(COPIED) and first["pages"] == 3
    assert len(first["groups"]) == 5 and first["groups"][0]["group"] == 1
    status, third = get(f"{server_url}/duplicates?per_page=5&page=3")
    assert [g["group"] for g in third["groups"]] == [11, 12]
    member = third["groups"][0]["members"][0]
    assert set(member) == {"object_id", "path", "distance", "width", "height", "bytes"}
    assert get(f"{server_url}/duplicates?feature_set=nope")[0] == 404
    status, bad = get(f"{server_url}/duplicates?max_distance=-1")
    assert status == 422 and "max-distance" in bad["error"]


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    if not chromium.available():
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    pytest.importorskip("selenium.webdriver")
    with chromium.headless_driver(tmp_path / "profile") as driver:
        yield driver


def test_the_page_lists_groups_with_thumbnails_and_the_keeper(
    browser: Any, server_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(f"{server_url}/#duplicates")
    wait.until(ec.text_to_be_present_in_element((By.ID, "duplicates-summary"), "12 group(s)"))
    assert not browser.find_element(By.ID, "duplicates-view").get_attribute("hidden")
    groups = browser.find_elements(By.CSS_SELECTOR, "#duplicate-groups > li")
    assert len(groups) == 10
    for group in groups:
        assert len(group.find_elements(By.CSS_SELECTOR, ".member.keeper")) == 1
        assert len(group.find_elements(By.CSS_SELECTOR, ".member img")) == 2
        assert "keep:" in group.text
    loaded = (
        "return [...document.querySelectorAll('#duplicate-groups img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    wait.until(lambda d: d.execute_script(loaded))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-duplicates.png"))
    shot = ARTIFACTS.parent / "docs" / "duplicates-view.png"  # the README's picture of the view
    if shot.parent.is_dir() and (
        not shot.exists() or os.environ.get("SIMSEARCH_UPDATE_SCREENSHOT") == "1"
    ):
        shutil.copyfile(ARTIFACTS / "browser-duplicates.png", shot)
    assert browser.find_element(By.ID, "duplicates-prev").get_attribute("disabled")
    browser.find_element(By.ID, "duplicates-next").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "duplicates-page"), "page 2 of 2"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#duplicate-groups > li")) == 2)
    # Back to the search view: the search pane shows again, the duplicates view hides.
    browser.find_element(By.ID, "search-link").click()
    wait.until(lambda d: d.find_element(By.ID, "duplicates-view").get_attribute("hidden"))
    assert browser.find_element(By.TAG_NAME, "main").is_displayed()
