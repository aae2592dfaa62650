"""The web page end to end in headless Chromium (Debian chromium + chromium-driver, Selenium):
type a query and see the expected picture first; upload an image (file picker and drag and
drop) and see itself first; click a result to search by it; the score cut-off hides results;
the matched words of lexical results are shown."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from server_fakes import COLORS, live_server

from lexlens.search import Query
from lexlens.server.backend import Backend

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)

pytestmark = pytest.mark.timeout(120)


class ExplainingBackend(Backend):
    """The real backend; each hit's ``explain`` lists the colour words the query text and the
    item's caption share (what a lexical index reports), so the page has words to show."""

    def _search(self, name, query, **opts):
        out = super()._search(name, query, **opts)
        words = set((query.text or "").lower().split()) & set(COLORS)
        for h in out.hits:
            shared = sorted(w for w in words if w in " ".join(h.captions).split())
            h.explain = {w: 1.0 for w in shared} or None
        return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"{CHROMIUM} / {CHROMEDRIVER} missing: `make test` installs the Debian packages "
            "chromium and chromium-driver with apt-get (as root)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def _wait_first(driver, expected_id: int, timeout: float = 20) -> list:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def first(d):
        hits = d.find_elements(By.CSS_SELECTOR, "#results .hit")
        return hits if hits and hits[0].get_attribute("data-id") == str(expected_id) else False

    # the grid may be re-rendered between finding a card and reading it: poll again then
    wait = WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(first)


def test_page_text_upload_drop_click_cutoff(driver, built, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from server_fakes import FakeEncoder

    from lexlens.server.app import create_app

    index_dir, _, items = built
    backend = ExplainingBackend.open([index_dir], names=["pics"], encoder=FakeEncoder())
    idx = backend.get("pics")
    with live_server(create_app(backend)) as url:
        driver.get(url + "/")
        assert driver.title == "lexlens search"
        # type a query: the best match by the library comes first
        expected = idx.search(Query(text="a purple picture"), k=24).hits[0][0].id
        box = driver.find_element(By.ID, "text")
        box.send_keys("a purple picture", Keys.ENTER)
        hits = _wait_first(driver, expected)
        assert len(hits) == 24
        words = hits[0].find_elements(By.CSS_SELECTOR, ".word")
        assert [w.text for w in words] == ["purple"]  # matched words shown
        assert hits[0].find_element(By.TAG_NAME, "img").get_attribute("naturalWidth") != "0"
        driver.save_screenshot(str(tmp_path / "text.png"))
        # score cut-off: only results at or above it stay
        scores = sorted(float(h.get_attribute("data-score")) for h in hits)
        cut = (scores[len(scores) // 2] + scores[-1]) / 2
        driver.execute_script(
            "const s = document.getElementById('cutoff'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input'));",
            cut,
        )
        shown = driver.find_elements(By.CSS_SELECTOR, "#results .hit")
        assert 0 < len(shown) < 24
        assert all(float(h.get_attribute("data-score")) >= round(cut, 2) for h in shown)
        assert len(shown) == sum(s >= round(cut, 2) for s in scores)
        driver.execute_script(
            "const s = document.getElementById('cutoff'); s.value = s.min;"
            "s.dispatchEvent(new Event('input'));"
        )
        # upload an image with the file picker: it finds itself first
        box.clear()
        picker = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false;", picker)
        picker.send_keys(str(Path(items[13].path).resolve()))
        _wait_first(driver, 13)
        # drag and drop another picture onto the drop zone
        driver.execute_async_script(
            """
            const [url, done] = arguments;
            fetch(url).then((r) => r.blob()).then((blob) => {
              const dt = new DataTransfer();
              dt.items.add(new File([blob], "dropped.png", {type: "image/png"}));
              const zone = document.getElementById("drop");
              zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true}));
              zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
              done();
            });
            """,
            url + "/thumb/pics/22",
        )
        _wait_first(driver, 22)
        driver.save_screenshot(str(tmp_path / "upload.png"))
        # click a result: search by that item, which comes first
        driver.find_element(By.ID, "clear-image").click()
        target = driver.find_elements(By.CSS_SELECTOR, "#results .hit")[3]
        target_id = int(target.get_attribute("data-id"))
        target.click()
        _wait_first(driver, target_id)
        assert "item" in driver.find_element(By.ID, "status").text
        # a server error is shown, not swallowed
        box.send_keys("x" * 2001, Keys.ENTER)
        err = driver.find_element(By.ID, "error")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 10).until(lambda d: err.is_displayed())
        assert "invalid request" in err.text
        shot = os.environ.get("LEXLENS_SCREENSHOT")
        if shot:
            shutil.copy(tmp_path / "text.png", shot)
            shutil.copy(tmp_path / "upload.png", shot.replace(".png", "-upload.png"))
