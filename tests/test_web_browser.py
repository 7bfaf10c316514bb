"""The page in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

Against a real ``edge serve`` over a looping folder of COCO images with people: the page loads and
asks for the token, the live view shows frames with boxes, an event appears when the detector fires,
and a person enrolled from uploaded photos then appears in the library. Screenshots are saved under
``test-artifacts/`` as artefacts of the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _unlock_helpers import deepface_people, liveness_models
from _web_server import WebServer, artifact, people_folder

pytest.importorskip("fastapi", reason="the web extra: pip install 'edgesight[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra)")
pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a sandbox-less, offline headless Chromium (root in a container; no Google services).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT_MS = 90_000
#: A zone over most of the frame and a counting line: both are drawn on the live view.
ZONES = """
[[zones]]
name = "room"
polygon = [[0.02, 0.02], [0.98, 0.02], [0.98, 0.98], [0.02, 0.98]]
units = "relative"

[[lines]]
name = "gate"
points = [[0.0, 0.5], [1.0, 0.5]]
units = "relative"
"""


def _count_rgb(page, test: str) -> int:
    """Pixels of the live view's current picture for which the JavaScript expression ``test`` (r, g, b) holds."""
    return page.evaluate("""(test) => {
        const img = document.getElementById('live'); const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d');
        g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
        const f = new Function('r', 'g', 'b', 'return ' + test);
        for (let i = 0; i < d.length; i += 4) if (f(d[i], d[i + 1], d[i + 2])) n++;
        return n; }""", test)


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    work = tmp_path_factory.mktemp("web-browser")
    zones = work / "zones.toml"
    zones.write_text(ZONES)
    srv = WebServer(work, people_folder(data_dir, work / "source"), liveness_dir=liveness_models(tmp_path_factory),
                    extra=["--zones", str(zones)])
    yield srv
    assert srv.stop() == 0, srv.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def page(server):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing (make system-deps installs it)")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        pg = context.new_page()
        pg.set_default_timeout(WAIT_MS)
        yield pg
        context.close()
        browser.close()


def test_page_asks_for_the_token_then_shows_the_live_view_with_boxes(server, page):
    page.goto(server.url + "/")
    assert page.locator("#login").is_visible() and page.locator("#app").is_hidden()
    page.fill("#token", "wrong-token-wrong-token")
    page.click("#login-form button")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert "invalid token" in page.inner_text("#login-error")
    page.screenshot(path=str(artifact("web_login_refused.png")))

    page.fill("#token", server.token)
    page.click("#login-form button")
    page.wait_for_selector("#app:not([hidden])")
    # the MJPEG <img> has decoded at least one frame
    page.wait_for_function("document.getElementById('live').naturalWidth > 0")
    # and the frame shows detections: the API behind it reports boxes for the newest frame
    page.wait_for_function("document.getElementById('live-info').textContent.includes('objects')")
    page.wait_for_function("!/ 0 objects/.test(document.getElementById('live-info').textContent)")
    live = page.locator("#live").screenshot(path=str(artifact("web_live_view.png")))
    assert len(live) > 10_000
    page.screenshot(path=str(artifact("web_page.png")), full_page=True)
    # the picture really has the boxes (the snapshot sink's green) and the zone outline (orange-blue) drawn on it
    green = _count_rgb(page, "r < 60 && g > 200 && b < 60")
    zone = _count_rgb(page, "r < 40 && g > 130 && g < 190 && b > 220")
    assert green > 200, f"only {green} box-coloured pixels in the live view"
    assert zone > 200, f"only {zone} zone-coloured pixels in the live view"


def test_an_event_appears_when_the_detector_fires(server, page):
    page.wait_for_selector("#events li.event[data-label='person']")
    page.fill("#filter-label", "giraffe")
    page.click("#apply-filters")
    page.wait_for_function("document.querySelectorAll('#events li').length === 0")
    page.fill("#filter-label", "person")
    page.fill("#filter-zone", "room")
    page.click("#apply-filters")
    page.wait_for_selector("#events li.event[data-label='person'] img")  # with its snapshot
    seen = page.eval_on_selector_all("#events li.event", "els => els.map(e => [e.dataset.label, e.dataset.zone])")
    assert seen and {tuple(x) for x in seen} == {("person", "room")}
    page.locator("#events-section").screenshot(path=str(artifact("web_events.png")))


def test_enrolment_from_uploaded_photos_then_the_person_is_in_the_library(server, page, data_dir):
    people = deepface_people(data_dir)
    page.fill("#enrol-name", "Ada Lovelace")
    page.set_input_files("#enrol-photos", [str(p) for p in people.enrol])
    page.click("#enrol-upload")
    page.wait_for_selector("#enrol-result .ok")
    verdicts = page.eval_on_selector_all("#verdicts li", "els => els.map(e => e.textContent)")
    assert len(verdicts) == len(people.enrol) and all(": kept" in v for v in verdicts)
    page.wait_for_selector("#people tr.person td.name:text-is('Ada Lovelace')")
    # the enrolled person is recognised in another photo, and the attempt is listed
    page.set_input_files("#recognize-photo", str(people.genuine[0]))
    page.click("#recognize-form button")
    page.wait_for_selector("#recognize-result li.face")
    assert page.inner_text("#recognize-result").startswith("Ada Lovelace (similarity")
    page.wait_for_selector("#attempts td:text-is('recognize')")
    page.locator("#faces-section").screenshot(path=str(artifact("web_face_library.png")))
    # a photo without a face gets its own verdict and nobody is enrolled
    page.fill("#enrol-name", "nobody")
    page.set_input_files("#enrol-photos", [str(data_dir / "samples" / "parrot.jpg")])
    page.click("#enrol-upload")
    page.wait_for_selector("#enrol-result .error")
    assert "no_face" in page.inner_text("#verdicts")
    names = page.eval_on_selector_all("#people td.name", "els => els.map(e => e.textContent)")
    assert names == ["Ada Lovelace"]
