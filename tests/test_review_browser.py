"""The review page in a real browser: Debian's Chromium driven by Playwright against a real `polishd serve`.

Screenshots land in var/test-artifacts/ (override with POLISHD_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.kit.browser import ARGS
from bench.kit.review_archive import make_archive
from bench.kit.serve import start_serve
from daemon.archive import Manifest
from daemon.journal import Journal
from tests.conftest import REPO, manifest_of

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
ARTIFACTS = Path(os.environ.get("POLISHD_ARTIFACTS", REPO / "var" / "test-artifacts"))
# As root, with no network: no sandbox, and none of Chromium's own calls home.


def _serve(root: Path, extra: str = "", count: int = 3):
    cfg, ids = make_archive(root, extra=extra, count=count)
    proc, url = start_serve(cfg.source, root / "serve.log", "--log-format", "json")
    return proc, (cfg, ids, url)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    proc, served = _serve(tmp_path_factory.mktemp("browser"))
    yield served
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def ab_site(tmp_path_factory):
    from bench.kit.review_archive import COMPARE

    proc, served = _serve(tmp_path_factory.mktemp("ab"), extra=COMPARE, count=1)
    yield served
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    # The page's CSP allows no eval, which Playwright's waits use: bypassed here, so escaping is tested on its
    # own (an unescaped prompt would run); the header itself is tested in test_review.py.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == [], errors  # no script error on any page


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review-{name}.png"), full_page=True)


def _manifest(cfg, image: str) -> Manifest:
    return manifest_of(cfg.paths.archive / image)


def _journal_reviews(cfg, image: str) -> list[dict]:
    j = Journal(cfg.paths.state / "journal.sqlite3")
    try:
        return j.reviews(str(cfg.paths.archive / image))
    finally:
        j.close()


def test_approve_by_clicking_is_recorded_in_the_journal_and_the_manifest(site, page):
    cfg, ids, url = site
    image = ids["photo-1.png"]
    page.goto(f"{url}/gallery")
    _shot(page, "gallery")
    page.click(f'a[href="/images/{image}"]')
    page.fill("#reviewer", "sam")
    page.dispatch_event("#reviewer", "change")
    page.fill("#reason", "clean hands, good light")
    page.click("#approve")
    page.wait_for_function("document.getElementById('state').textContent === 'approved'")
    assert page.locator("#decisions li").last.text_content().endswith("sam · approve: clean hands, good light")
    (entry,) = _manifest(cfg, image).review
    assert (entry.who, entry.decision, entry.reason) == ("sam", "approve", "clean hands, good light")
    assert [(r["who"], r["decision"]) for r in _journal_reviews(cfg, image)] == [("sam", "approve")]
    page.goto(f"{url}/gallery?state=approved")
    assert page.locator(f'a[href="/images/{image}"]').count() == 1


def test_reject_with_the_keyboard_and_move_between_images_with_j_and_k(site, page):
    cfg, ids, url = site
    image = ids["photo-2.png"]
    page.goto(f"{url}/images/{image}")
    page.keyboard.press("r")
    page.wait_for_function("document.getElementById('state').textContent === 'rejected'")
    assert [r.decision for r in _manifest(cfg, image).review] == ["reject"]
    assert [r["decision"] for r in _journal_reviews(cfg, image)] == ["reject"]
    next_link = page.get_attribute("#next", "href") or page.get_attribute("#prev", "href")
    page.keyboard.press("j" if page.locator("#next").count() else "k")
    page.wait_for_url(f"{url}{next_link}")
    # typing a reason is not a shortcut
    here, state = page.url, page.text_content("#state")
    page.type("#reason", "a r j k")
    page.wait_for_timeout(300)
    assert (page.url, page.text_content("#state")) == (here, state)


def test_the_before_after_slider_moves(site, page):
    cfg, ids, url = site
    page.goto(f"{url}/images/{ids['prompted.png']}")
    clip = page.locator("#before-clip")
    assert clip.evaluate("e => e.style.width") == "50%"
    half = clip.bounding_box()["width"]
    page.locator("#slider").scroll_into_view_if_needed()
    box = page.locator("#slider").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2)
    width = clip.evaluate("e => e.style.width")
    assert width.endswith("%") and 15 <= float(width[:-1]) <= 25, width
    assert clip.bounding_box()["width"] < half * 0.6
    assert page.evaluate("window.pwned") is None  # the prompt's markup did not run
    assert "<script>window.pwned" in page.text_content(".prompt")  # it is shown as text
    _shot(page, "image")


def test_the_dashboard_retries_a_failure(site, page):
    cfg, ids, url = site
    page.goto(url)
    _shot(page, "dashboard")
    row = page.locator("table.failures tr", has_text="broken.png")
    row.locator("button.retry").click()
    page.wait_for_function("document.querySelector('button.retry').disabled")
    assert row.locator("button.retry").text_content() == "queued"
    assert (cfg.paths.inbox / "broken.png").exists() and not (cfg.paths.failed / "broken.png").exists()
    j = Journal(cfg.paths.state / "journal.sqlite3")
    assert [x.state for x in j.jobs() if x.name == "broken.png"] == ["queued"]
    j.close()


def test_the_dashboard_draws_the_days_figures_and_links_to_what_needs_a_look(site, page):
    cfg, ids, url = site
    page.goto(url)
    page.wait_for_load_state("networkidle")
    hours = page.locator("svg#throughput g.hour")
    assert hours.count() == 24
    done = sum(int(hours.nth(i).get_attribute("data-done")) for i in range(24))
    assert done == len(ids) and page.locator("#day-done b").text_content() == str(done)
    drawn = page.evaluate("Array.from(document.querySelectorAll('svg#throughput rect.done'))"
                          ".map(r => r.getBoundingClientRect().height)")
    assert max(drawn) > 50 and sorted(drawn)[:-1] == [0] * 23  # this archive's images all ended this hour
    stages = page.locator("svg#stage-times g.stage")
    assert {stages.nth(i).get_attribute("data-stage") for i in range(stages.count())} >= {"automask", "outpaint"}
    thumbs = page.locator("ul.latest img")
    assert thumbs.count() == len(ids)
    page.wait_for_function("Array.from(document.querySelectorAll('ul.latest img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    _shot(page, "dashboard-figures")
    for tile, state in (("#needs-review", "flagged"), ("#failures", "failed")):
        page.goto(url)
        shown = int(page.locator(f"{tile} b").text_content())
        page.click(tile)
        page.wait_for_url(f"{url}/gallery?state={state}")
        assert page.locator("ul.grid li.card").count() == shown, state


def test_an_ab_pick_by_clicking_names_the_engines_only_afterwards(ab_site, page):
    cfg, ids, url = ab_site
    image = ids["prompted.png"]
    page.goto(f"{url}/images/{image}")
    box = page.locator(".ab")
    assert box.locator("figure.candidate").count() == 2
    assert [t.strip() for t in box.locator(".engine").all_text_contents()] == ["", ""]  # unlabelled
    assert "animevideov3" not in box.inner_html() and "x4plus-anime" not in box.inner_html()
    _shot(page, "ab-before")
    box.locator("button.pick").first.click()
    page.wait_for_function("document.querySelector('.ab figure.picked') !== null")
    names = [t.strip() for t in box.locator(".engine").all_text_contents()]
    assert sorted(names) == ["animevideov3", "x4plus-anime"]
    chosen = box.locator("figure.picked .engine").text_content().strip()
    manifest = _manifest(cfg, image)
    assert [(p.stage, p.choice) for p in manifest.picks] == [("upscale", chosen)]
    j = Journal(cfg.paths.state / "journal.sqlite3")
    rates = {r["engine"]: r["picked"] for r in j.win_rates()}
    j.close()
    assert rates == {chosen: 1, ({"animevideov3", "x4plus-anime"} - {chosen}).pop(): 0}
    page.goto(f"{url}/comparisons")
    assert page.locator("table.rates tr", has_text=chosen).locator("td").last.text_content() == "100%"
    _shot(page, "comparisons")


def test_variants_stand_beside_the_picture_at_one_scale_with_their_figures(site, page):
    cfg, ids, url = site
    page.goto(f"{url}/images/{ids['photo-1.png']}")
    variant = page.locator("#variant-16x9")
    variant.scroll_into_view_if_needed()
    master_h = variant.locator("img.v-master").bounding_box()["height"]
    wide = variant.locator("img.v-variant")
    assert wide.evaluate("e => e.complete && e.naturalWidth > 0")
    natural = wide.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    frame = _manifest(cfg, ids["photo-1.png"]).products().variants[0].frame
    # drawn at one scale: the picture as high on screen as it stands inside the variant
    assert abs(master_h - wide.bounding_box()["height"] * (frame[3] - frame[1]) / natural[1]) <= 1.5
    assert "backdrop infill alone" in variant.text_content() and "seam visibility" in variant.text_content()
    assert page.locator("ul.held").count() == 0 or "held" in page.locator("ul.held").text_content()
    variant.screenshot(path=str(ARTIFACTS / "review-variant.png"))


def test_the_loupe_shows_the_upscale_at_one_to_one(ab_site, page):
    cfg, ids, url = ab_site
    page.goto(f"{url}/images/{ids['prompted.png']}")
    picture = page.locator("#loupe-picture")
    picture.scroll_into_view_if_needed()
    page.wait_for_function("document.getElementById('loupe-picture').naturalWidth > 0")
    box = picture.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    lens = page.locator("#loupe")
    assert lens.is_visible()
    natural_w = picture.evaluate("e => e.naturalWidth")
    x, y = (float(v[:-2]) for v in lens.evaluate("e => e.style.backgroundPosition").split())
    # the pixel under the pointer is at the lens's centre, at the upscale's own size
    assert abs(-x + 120 - 0.25 * natural_w) <= 2
    page.mouse.move(5, 5)
    assert not lens.is_visible()
    _shot(page, "loupe")
