"""The review page's HTTP side: pages, the JSON API, decisions in the journal and the manifest, and each
security rule (binding, login, CSRF, files by manifest name only, escaping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bench.kit.review_archive import HOSTILE_PROMPT, make_archive
from daemon import config as config_mod
from daemon.archive import ArchiveFolder, StageEntry
from daemon.journal import Journal
from daemon.review.app import create_app
from stages.base import StageStatus
from tests.conftest import REPO, manifest_of
from tests.test_deliver import MASTER_AND_BANNER

TOKEN = "correct-horse-battery-staple-42"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("review"))


def _client(cfg) -> TestClient:
    client = TestClient(create_app(cfg), base_url="http://127.0.0.1:8750")
    client.get("/")  # the CSRF cookie, as a browser gets it with its first page
    return client


def _post(client: TestClient, url: str, body: dict, **kw):
    return client.post(url, json=body, headers={"X-CSRF-Token": client.cookies.get("polishd_csrf", ""),
                                                **kw.pop("headers", {})}, **kw)


def test_the_pages_and_the_api_show_the_archive(archive):
    cfg, ids = archive
    client = _client(cfg)
    home = client.get("/")
    assert home.status_code == 200 and "Recent failures" in home.text and "broken.png" in home.text
    gallery = client.get("/gallery?state=awaiting")
    assert all(f"/images/{i}" in gallery.text for i in ids.values())
    listing = client.get("/api/images?state=all&limit=2").json()
    assert listing["total"] == 3 and len(listing["images"]) == 2
    assert client.get("/api/images?state=failed").json()["images"][0]["name"] == "broken.png"
    one = client.get(f"/api/images/{ids['prompted.png']}").json()
    assert one["prompt"]["positive"] == HOSTILE_PROMPT.strip() and one["prompt"]["source"] == "a1111"
    assert one["detections"] == "10-detections.png" and [v["label"] for v in one["variants"]] == ["16x9", "4x5"]
    assert one["state"] == "awaiting" and {s["name"] for s in one["stages"]} >= {"automask", "outpaint", "deliver"}
    page = client.get(f"/images/{ids['prompted.png']}")
    assert page.status_code == 200 and 'id="slider"' in page.text and "10-detections.png" in page.text
    assert 'id="generation"' in page.text and "<th>checkpoint</th><td>dreamshaper</td>" in page.text
    assert client.get("/images/no-such-image").status_code == 404
    thumb = client.get(f"/thumbs/{ids['photo-1.png']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    made = list((cfg.paths.state / "thumbnails").iterdir())
    before = {p: p.stat().st_mtime_ns for p in made}
    client.get(f"/thumbs/{ids['photo-1.png']}")
    assert {p: p.stat().st_mtime_ns for p in made} == before  # made once, then served from the cache


def test_a_decision_is_recorded_in_the_journal_and_the_manifest(archive):
    cfg, ids = archive
    client = _client(cfg)
    image = ids["photo-2.png"]
    r = _post(client, f"/api/images/{image}/review", {"decision": "reject", "reason": "hands look wrong"},
              headers={"X-Reviewer": "dana"})
    assert r.status_code == 200, r.text
    r = _post(client, f"/api/images/{image}/review", {"decision": "approve", "variant": "16x9"})
    assert r.status_code == 200
    assert _post(client, f"/api/images/{image}/review", {"decision": "maybe"}).status_code == 422
    assert _post(client, f"/api/images/{image}/review", {"decision": "approve", "variant": "1x1"}).status_code == 422
    manifest = manifest_of(cfg.paths.archive / image)
    assert [(r.who, r.decision, r.variant, r.reason) for r in manifest.review] == [
        ("dana", "reject", None, "hands look wrong"), ("reviewer", "approve", "16x9", "")]
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    assert [(r["decision"], r["variant"]) for r in journal.reviews(str(cfg.paths.archive / image))] == [
        ("reject", None), ("approve", "16x9")]
    assert journal.by_archive(str(cfg.paths.archive / image)).review == "reject"  # a variant's pick is not the image's
    journal.close()
    rejected = client.get("/api/images?state=rejected").json()["images"]
    assert [i["id"] for i in rejected] == [image]


def test_untrusted_text_is_escaped_everywhere_it_is_shown(archive):
    cfg, ids = archive
    page = _client(cfg).get(f"/images/{ids['prompted.png']}").text
    assert "<script>window.pwned" not in page and 'onerror="window.pwned' not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page
    assert "script-src 'self'" in _client(cfg).get("/").headers["content-security-policy"]


def test_files_are_served_only_by_a_name_the_manifest_lists(archive, tmp_path):
    cfg, ids = archive
    client = _client(cfg)
    image = ids["photo-1.png"]
    folder = cfg.paths.archive / image
    ok = client.get(f"/files/{image}/10-detections.png")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    assert ok.content == (folder / "10-detections.png").read_bytes()
    (tmp_path / "secret.png").write_bytes(b"not for you")
    os.symlink(tmp_path / "secret.png", folder / "99-contact.jpg")  # a link where a listed name could be
    (folder / "stray.png").write_bytes(b"unlisted")
    manifest = manifest_of(folder)
    manifest.put_stage(StageEntry("contact", StageStatus.DONE, outputs=["99-contact.jpg"]))
    ArchiveFolder(folder).write_manifest(manifest)
    attempts = [f"/files/{image}/stray.png", f"/files/{image}/99-contact.jpg", f"/files/{image}/manifest.json",
                f"/files/{image}/..%2F..%2Fstate%2Fjournal.sqlite3", f"/files/{image}/%2E%2E%2Fother.png",
                f"/files/..%2F{image}/10-detections.png", f"/files/{image}/%2Fetc%2Fpasswd",
                f"/files/{image}/..\\..\\pipeline.toml", f"/files/{image}/", f"/files/{image}",
                "/files/%2E%2E/pipeline.toml", f"/files/{image}/10-detections.png%00.json"]
    for url in attempts:
        r = client.get(url)
        assert r.status_code == 404, url
        assert b"not for you" not in r.content and b"unlisted" not in r.content, url
    assert client.get("/files/").status_code == 404 and client.get("/static/").status_code == 404  # no listing


def test_state_changing_requests_need_the_csrf_header(archive):
    cfg, ids = archive
    client = _client(cfg)
    url = f"/api/images/{ids['photo-1.png']}/review"
    assert client.post(url, json={"decision": "approve"}).status_code == 403  # no header: a cross-site form
    assert client.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": "guess"}).status_code == 403
    fresh = TestClient(create_app(cfg), base_url="http://127.0.0.1:8750")  # no cookie at all
    assert fresh.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": "x"}).status_code == 403
    assert _post(client, url, {"decision": "approve"}).status_code == 200


def test_with_a_token_every_request_needs_it_or_the_login_cookie(archive):
    cfg, ids = archive
    cfg = _with_token(cfg)
    client = TestClient(create_app(cfg), base_url="http://127.0.0.1:8750", follow_redirects=False)
    assert client.get("/").status_code == 303 and client.get("/").headers["location"] == "/login"
    assert client.get("/api/images").status_code == 401
    assert client.get(f"/files/{ids['photo-1.png']}/10-detections.png").status_code in (303, 401)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/images?state=all", headers=bearer).status_code == 200
    # a script with the token needs no CSRF header: nothing ambient rides along
    r = client.post(f"/api/images/{ids['photo-1.png']}/review", json={"decision": "approve"}, headers=bearer)
    assert r.status_code == 200
    assert client.get("/api/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
    client.get("/login")
    assert _post(client, "/login", {"token": "wrong"}).status_code == 403
    assert _post(client, "/login", {"token": TOKEN}).status_code == 200
    assert client.get("/").status_code == 200  # the login cookie
    assert client.get("/api/images").status_code == 200


def test_the_page_refuses_what_the_torture_set_sent_it(archive):
    """DNS rebinding, a CSRF pair the client made up, guessing the token, odd characters, deep and huge bodies,
    page numbers past any page: each answered with a 4xx, never a 500, and nothing recorded."""
    cfg, ids = archive
    cfg = _with_token(cfg)
    url = f"/api/images/{ids['photo-2.png']}/review"
    foreign = TestClient(create_app(cfg), base_url="http://attacker.example:8750")
    assert foreign.get("/login").status_code == 421  # a foreign Host gets no page and no cookie
    assert "polishd_csrf" not in foreign.cookies
    client = TestClient(create_app(cfg), base_url="http://127.0.0.1:8750", follow_redirects=False)
    client.get("/login")
    client.cookies.set("polishd_csrf", "abc")  # a pair the client makes up itself
    assert client.post("/login", json={"token": TOKEN}, headers={"X-CSRF-Token": "abc"}).status_code == 403
    client.cookies.delete("polishd_csrf")
    client.get("/login")
    assert _post(client, "/login", {"token": "wrong but long enough"}).status_code == 403
    statuses = [_post(client, "/login", {"token": f"guess {n}"}).status_code for n in range(6)]
    assert statuses[-1] == 429 and 429 in statuses  # throttled after a few wrong tries
    odd = TestClient(create_app(cfg), base_url="http://127.0.0.1:8750", follow_redirects=False)
    assert odd.get("/api/images", headers={"Authorization": "Bearer tökén ✓".encode()}).status_code == 401
    cookie = {"Cookie": "polishd_session=" + "é" * 10}
    assert odd.get("/api/images", headers={k: v.encode() for k, v in cookie.items()}).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    deep = "[" * 100_000 + "]" * 100_000
    assert odd.post(url, content=deep, headers=bearer).status_code == 422  # read as no decision at all
    assert odd.post(url, content=b"{" + b" " * (2 << 20) + b"}", headers=bearer).status_code == 413
    assert odd.get("/gallery?page=100000000000000000000", headers=bearer).status_code == 200
    assert odd.get("/api/images?page=-5&state=all", headers=bearer).status_code == 200
    assert client.app.state.review.journal.reviews(ids["photo-2.png"]) == []


def _with_token(cfg):
    import dataclasses

    return dataclasses.replace(cfg, review=dataclasses.replace(cfg.review, token=TOKEN))


def test_serve_binds_beyond_loopback_only_with_a_token(tmp_path):
    from tests.conftest import write_config

    config = write_config(tmp_path)
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), "serve", "--host", "0.0.0.0"],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2 and "serving on 0.0.0.0 needs [review].token" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(config_mod.ConfigError, match=r"\[review\]\.token must be at least 16 characters"):
        config_mod.parse('[review]\ntoken = "short"\n')


def test_serve_stops_on_sigterm_with_status_0_as_run_does(tmp_path):
    import signal

    from bench.kit.serve import start_serve

    cfg, _ = make_archive(tmp_path, count=1)
    proc, _url = start_serve(cfg.source, tmp_path / "serve.log")
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # systemd's ExecStop sees a clean stop, not 143
    finally:
        if proc.poll() is None:
            proc.kill()


def _run_queued(cfg) -> list:
    """What `polishd run` would do with the queued jobs: the real runner, one after another."""
    from daemon.pipeline import default_stages
    from daemon.runner import Runner

    journal = Journal(cfg.paths.state / "journal.sqlite3")
    runner = Runner(journal, lambda: cfg, default_stages())
    outcomes = []
    while (job := journal.claim()) is not None:
        outcomes.append(runner.run_job(job))
    journal.close()
    return outcomes


def test_retry_with_new_settings_keeps_the_earlier_run_and_runs_the_image_again(tmp_path):
    cfg, ids = make_archive(tmp_path, count=1)
    image = ids["prompted.png"]
    folder = cfg.paths.archive / image
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    client = _client(cfg)
    bad = _post(client, f"/api/images/{image}/retry", {"settings": {"outpaint": {"variants": ["16:7:1"]}}})
    assert bad.status_code == 422 and "[outpaint]" in bad.json()["error"] and not (folder / "runs").exists()
    r = _post(client, f"/api/images/{image}/retry", {"settings": {"outpaint": {"variants": ["1:1", "9:16"]}}},
              headers={"X-Reviewer": "lee"})
    assert r.status_code == 200, r.text
    assert r.json()["previous_run"] == "runs/1"
    kept = folder / "runs" / "1"
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == \
        {k: v for k, v in before.items() if k != "00-original.png"}  # the earlier run, byte for byte
    assert json.loads((folder / "00-sidecar.json").read_text()) == {"outpaint": {"variants": ["1:1", "9:16"]}}
    (outcome,) = _run_queued(cfg)  # the daemon takes it
    assert outcome.status == "done" and outcome.archive == folder
    manifest = manifest_of(folder)
    assert manifest.overrides == {"outpaint": {"variants": ["1:1", "9:16"]}}
    assert [(r.run, r.who) for r in manifest.runs] == [(1, "lee")]
    assert (folder / "30-outpaint-9x16.png").exists() and (kept / "30-outpaint-16x9.png").exists()
    assert (folder / "00-original.png").read_bytes() == before["00-original.png"]
    # kept from the first run: only what the new settings touch ran again
    assert manifest.stage("automask").status == "done"
    assert client.get(f"/api/images/{image}").json()["runs"][0]["folder"] == "runs/1"


def test_with_require_review_an_approval_delivers_the_image(tmp_path):
    cfg, ids = make_archive(tmp_path, extra="[deliver]\nrequire_review = true\n", count=1)
    image = ids["prompted.png"]
    outbox = cfg.paths.outbox / image
    assert not outbox.exists()  # waiting for approval
    client = _client(cfg)
    r = _post(client, f"/api/images/{image}/review", {"decision": "approve"})
    assert r.status_code == 200 and r.json()["delivery"].startswith("queued as job #")
    (outcome,) = _run_queued(cfg)
    assert outcome.status == "done"
    assert sorted(p.name for p in outbox.iterdir()) == ["prompted-master.png"]
    manifest = manifest_of(cfg.paths.archive / image)
    assert manifest.stage("deliver").status == "done" and manifest.review[0].decision == "approve"
    # a rejection after that delivers nothing more; another approval queues the image once
    _post(client, f"/api/images/{image}/review", {"decision": "reject"})
    assert _run_queued(cfg) == []


def test_an_ab_pick_is_recorded_counted_and_becomes_what_is_delivered(tmp_path):
    from bench.kit.review_archive import COMPARE

    cfg, ids = make_archive(tmp_path, extra=COMPARE, count=2)
    first, second = ids["prompted.png"], ids["photo-1.png"]
    folder = cfg.paths.archive / first
    assert (folder / "40-upscale.png").exists() and (folder / "40-upscale@x4plus-anime.png").exists()
    client = _client(cfg)
    (comparison,) = client.get(f"/api/images/{first}").json()["comparisons"]
    assert sorted(c["choice"] for c in comparison["candidates"]) == ["animevideov3", "x4plus-anime"]
    assert comparison["picked"] is None
    page = client.get(f"/images/{first}").text
    assert "Which upscale is better?" in page and "animevideov3" not in page.split("Which upscale")[1].split(
        "</div>")[0]  # unlabelled until the pick
    token = next(c["token"] for c in comparison["candidates"] if c["choice"] == "x4plus-anime")
    r = _post(client, f"/api/images/{first}/pick", {"stage": "upscale", "choice": token})
    assert r.status_code == 200 and r.json()["recorded"]["choice"] == "x4plus-anime"
    assert _post(client, f"/api/images/{second}/pick", {"stage": "upscale", "choice": "animevideov3"}).status_code \
        == 200
    assert _post(client, f"/api/images/{first}/pick", {"stage": "upscale", "choice": "x4plus"}).status_code == 422
    assert _post(client, f"/api/images/{first}/pick", {"stage": "inpaint", "choice": "a"}).status_code == 422
    manifest = manifest_of(folder)
    assert [(p.stage, p.choice, sorted(p.shown)) for p in manifest.picks] == [
        ("upscale", "x4plus-anime", ["animevideov3", "x4plus-anime"])]
    rates = {e["engine"]: (e["shown"], e["picked"]) for e in client.get("/api/comparisons").json()["engines"]}
    assert rates == {"animevideov3": (2, 1), "x4plus-anime": (2, 1)}
    assert "x4plus-anime" in client.get("/comparisons").text
    outcomes = _run_queued(cfg)  # the picks go to delivery
    assert [o.status for o in outcomes] == ["done", "done"]
    record = json.loads((folder / "50-deliver.json").read_text())
    assert record["deliveries"][0]["source"] == "40-upscale@x4plus-anime.png"
    other = json.loads((cfg.paths.archive / second / "50-deliver.json").read_text())
    assert other["deliveries"][0]["source"] == "40-upscale.png"


@pytest.mark.slow
def test_an_inpaint_alternative_picked_becomes_the_master_that_is_outpainted_and_delivered(tmp_path, tiny_sd):
    import numpy as np
    from PIL import Image

    extra = (f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n'
             '[inpaint.gate]\nenabled = false\n'  # a random tiny model's faces never pass it
             '[[inpaint.compare]]\nlabel = "gentle"\nstrength = 0.3\nsteps = 3\n')
    cfg, ids = make_archive(tmp_path, extra=extra, count=1)
    image = ids["prompted.png"]
    folder = cfg.paths.archive / image
    main, gentle = (np.asarray(Image.open(folder / n)) for n in ("20-inpaint.png", "20-inpaint@gentle.png"))
    mask = np.asarray(Image.open(folder / "10-mask-face.png")) > 0
    assert not np.array_equal(main, gentle)  # another painting…
    assert np.array_equal(main[~mask], gentle[~mask])  # …of the masked regions only
    manifest = manifest_of(folder)
    (alternative,) = manifest.details("inpaint").alternatives
    assert alternative.label == "gentle" and alternative.regions[0].strength == 0.3
    outpainted = manifest.stage("outpaint").inputs_sha256
    client = _client(cfg)
    comparison = next(c for c in client.get(f"/api/images/{image}").json()["comparisons"] if c["stage"] == "inpaint")
    assert sorted(c["choice"] for c in comparison["candidates"]) == ["gentle", "main"]
    assert _post(client, f"/api/images/{image}/pick", {"stage": "inpaint", "choice": "gentle"}).status_code == 200
    (outcome,) = _run_queued(cfg)
    assert outcome.status == "done"
    manifest = manifest_of(folder)
    assert manifest.stage("inpaint").products.master.name == "20-inpaint@gentle.png"
    record = json.loads((folder / "50-deliver.json").read_text())
    assert record["deliveries"][0]["source"] == "20-inpaint@gentle.png"
    outpaint = manifest.stage("outpaint")
    assert outpaint.status == "done" and outpaint.inputs_sha256 != outpainted  # variants of the picked master


def test_next_and_previous_follow_the_gallery_order(archive):
    cfg, _ = archive
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    try:
        order = [j.archive for j in journal.gallery("all", 100, 0)[0]]
        assert len(order) == 3
        for i, archive_path in enumerate(order):
            newer, older = journal.neighbours(archive_path)
            assert newer == (order[i - 1] if i else None) and older == (order[i + 1] if i + 1 < len(order) else None)
    finally:
        journal.close()
    page = _client(cfg).get(f"/images/{order[1].rsplit('/', 1)[1]}").text
    assert f'id="prev" href="/images/{order[0].rsplit("/", 1)[1]}"' in page
    assert f'id="next" href="/images/{order[2].rsplit("/", 1)[1]}"' in page


def test_an_image_the_gate_flagged_is_shown_as_needing_review(tmp_path):
    """The flag the quality gate raises (tests/test_gate.py): in its own gallery, on the card and on the page,
    escaped like everything else that comes from an image."""
    cfg, ids = make_archive(tmp_path, count=2, variants=False)  # no infill variants: only the gate flags
    flagged, other = ids["prompted.png"], ids["photo-1.png"]
    why = "face 0: every try failed the quality gate (<b>score</b> 0.1); its original pixels are kept"
    manifest = manifest_of(cfg.paths.archive / flagged)
    manifest.stage("automask").attention = [why]
    ArchiveFolder(cfg.paths.archive / flagged).write_manifest(manifest)
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    with journal._tx() as db:
        db.execute("UPDATE jobs SET attention=? WHERE archive LIKE ?", (f"automask: {why}", f"%{flagged}"))
    client = _client(cfg)
    gallery = client.get("/gallery?state=flagged").text
    assert f"/images/{flagged}" in gallery and f"/images/{other}" not in gallery and "needs review" in gallery
    page = client.get(f"/images/{flagged}").text
    assert 'id="attention"' in page and "&lt;b&gt;score&lt;/b&gt;" in page and "<b>score</b>" not in page
    assert 'id="attention"' not in client.get(f"/images/{other}").text
    assert client.get(f"/api/images/{flagged}").json()["attention"] == [f"automask: {why}"]
    # once a reviewer decides, it no longer waits in the flagged gallery
    assert _post(client, f"/api/images/{flagged}/review", {"decision": "approve"}).status_code == 200
    assert f"/images/{flagged}" not in client.get("/gallery?state=flagged").text


HELD = MASTER_AND_BANNER  # the banner comes from an infill variant: held


def test_a_variant_is_shown_beside_the_picture_at_its_scale_with_its_seam_figures_and_the_deliveries(tmp_path):
    cfg, ids = make_archive(tmp_path, extra=HELD, count=1)
    image = ids["prompted.png"]
    client = _client(cfg)
    data = client.get(f"/api/images/{image}").json()
    wide = next(v for v in data["variants"] if v["label"] == "16x9")
    plan = next(v for v in manifest_of(cfg.paths.archive / image).details("outpaint").variants if v.label == "16x9")
    x0, y0, x1, y1 = manifest_of(cfg.paths.archive / image).products().variants[0].frame
    # the same scale: the master drawn as high as it stands inside the variant
    assert wide["master_height"] == round(wide["height"] * (y1 - y0) / plan.output_size[1])
    assert wide["infill"] == "backdrop" and wide["drift"] == plan.drift and wide["gate"].startswith("not judged")
    page = client.get(f"/images/{image}").text
    assert 'class="v-master"' in page and "backdrop infill alone" in page and "seam visibility" in page
    # what left for the outbox, and what was held back with the reason
    assert [d["preset"] for d in data["delivered"]["files"]] == ["master"]
    assert data["delivered"]["held"][0]["preset"] == "banner" and "held" in page and "infill alone" in page
    got = client.get(f"/delivered/{image}/master")
    delivered = manifest_of(cfg.paths.archive / image).details("deliver").deliveries[0]
    assert got.status_code == 200 and got.content == Path(delivered.path).read_bytes()
    assert client.get(f"/delivered/{image}/banner").status_code == 404  # held: nothing to serve
    assert client.get(f"/delivered/{image}/..%2F..%2Fpipeline.toml").status_code == 404
    # a manifest that points a delivery outside the outbox serves nothing
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for you")
    folder = ArchiveFolder(cfg.paths.archive / image)
    m = folder.read_manifest()
    m.stage("deliver").details.deliveries[0].path = str(secret)
    folder.write_manifest(m)
    r = client.get(f"/delivered/{image}/master")
    assert r.status_code == 404 and b"not for you" not in r.content


def test_approving_an_infill_variant_queues_its_delivery_and_keeps_the_images_decision(tmp_path):
    cfg, ids = make_archive(tmp_path, extra=HELD, count=1)
    image = ids["prompted.png"]
    client = _client(cfg)
    assert _post(client, f"/api/images/{image}/review", {"decision": "reject"}).status_code == 200
    r = _post(client, f"/api/images/{image}/review", {"decision": "approve", "variant": "16x9"}).json()
    assert r["delivery"].startswith("queued as job")
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    job = journal.by_archive(str(cfg.paths.archive / image))
    assert job.state == "queued" and job.review == "reject"  # the rerun keeps the image's own decision
    journal.close()
    (done,) = _run_queued(cfg)
    details = manifest_of(cfg.paths.archive / image).details("deliver")
    assert sorted(d.preset for d in details.deliveries) == ["banner", "master"] and not details.held


def test_the_dashboard_shows_the_days_throughput_stage_times_queue_review_and_latest_images(tmp_path):
    import re
    import time

    cfg, ids = make_archive(tmp_path, count=1, variants=False)  # one real image done now, one failed now
    real = cfg.paths.archive / ids["prompted.png"]
    hostile = '<img src=x onerror="window.pwned=1">.png'
    now = time.time()
    journal = Journal(cfg.paths.state / "journal.sqlite3")

    def job(name, state, finished, timings=None, created=None, archive=None):
        with journal._tx() as db:
            db.execute("INSERT INTO jobs(source,name,sha256,bytes,mtime,state,created,finished,archive,timings)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (str(cfg.paths.inbox / name), name, f"{hash(name) & 0xffff:064x}", 1, now, state,
                        created or finished or now, finished, archive, json.dumps(timings) if timings else None))

    for seconds in (1.0, 2.0, 3.0, 4.0, 10.0):  # upscale is off in the real run: these are its only times
        job(f"up-{seconds}.png", "done", now - 1800, {"upscale": seconds})
    job("earlier.png", "done", now - 5 * 3600 - 60, {"upscale": 2.0})
    job("yesterday.png", "done", now - 30 * 3600, {"upscale": 500.0})  # outside the day: not counted
    job("bad.png", "failed", now - 2 * 3600 - 60)
    job("waiting.png", "queued", None, created=now - 600)
    job(hostile, "done", now + 1, archive=str(real))  # the newest finished image, its name from outside
    for decision in ("approve", "approve", "approve", "reject"):
        journal.add_review(str(cfg.paths.archive / f"reviewed-{decision}-{journal.decisions()[decision]}"),
                           None, decision, "", "lead")
    journal.close()

    html = _client(cfg).get("/").text
    bars = re.findall(r'<g class="hour" data-done="(\d+)" data-failed="(\d+)">', html)
    assert len(bars) == 24
    done_today = 1 + 5 + 1  # the real image, the five upscales, earlier.png (the hostile one is "now + 1")
    assert [int(d) for d, _ in bars][-1] == 1 + 5 and sum(int(d) for d, _ in bars) == done_today
    assert [int(d) for d, _ in bars][-6] == 1 and sum(int(f) for _, f in bars) == 2  # bad.png, broken.png
    assert 'data-stage="upscale"' in html and "upscale: median 2.50 s, p95 10.00 s over 6 jobs" in html
    assert "500.00" not in html
    assert re.search(r'id="queue"><b>1</b><span>queued, oldest waiting 10 min', html)
    assert re.search(r'href="/gallery\?state=failed"><b>2</b>', html)
    assert 'href="/gallery?state=flagged"' in html
    assert re.search(r'id="approval"><b>75 %</b>\s*<span>approved, of 4 reviewed', html)
    assert html.index(f'href="/images/{real.name}"') < html.index("Recent failures")
    assert hostile not in html and "&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;.png" in html


def test_a_crowd_of_half_sent_requests_huge_bodies_and_deep_json_over_a_real_socket_cannot_hold_the_page(
        archive, tmp_path):
    """A bounded load test against a real `polishd serve` on a loopback port; it stops by itself."""
    import socket
    import time
    import urllib.error
    import urllib.request

    from bench.kit.serve import start_serve
    from daemon.review.app import CONNECTIONS, HEAD_TIMEOUT

    cfg, ids = archive
    proc, url = start_serve(cfg.source, tmp_path / "serve.log")
    port = int(url.rsplit(":", 1)[1])
    crowd: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS + 44):  # more half-sent heads than the page takes connections
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            crowd.append(s)

        def answers() -> int:
            try:
                return urllib.request.urlopen(f"{url}/", timeout=5).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert answers() == 503  # full: refused at once, not queued behind the crowd
        end = time.monotonic() + HEAD_TIMEOUT + 10
        while answers() != 200:
            assert time.monotonic() < end, "the page stayed unreachable past the head timeout"
            time.sleep(0.5)
        for s in crowd:  # each half-sent request was closed by the server
            s.settimeout(5)
            assert s.recv(100) == b""

        cookie = urllib.request.urlopen(f"{url}/", timeout=5).headers["Set-Cookie"].split(";")[0]
        csrf = cookie.split("=", 1)[1]  # a real pair, so that the body itself is what is judged

        def post(body: bytes, length: int | None = None) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                head = (f"POST /api/images/{ids['photo-1.png']}/review HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {length or len(body)}\r\n"
                        f"Cookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\nConnection: close\r\n\r\n").encode()
                s.sendall(head + body)
                return s.recv(200)

        t0 = time.monotonic()
        assert b" 413 " in post(b"{" + b" " * (1 << 20), length=300 << 20)[:20]  # says 300 MB, sends 1 MB
        assert time.monotonic() - t0 < 5  # refused by its length, not read to the end
        assert post(b"[" * 100_000 + b"]" * 100_000)[9:12] == b"422"  # read as no decision, never a 500
        assert answers() == 200
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        for s in crowd:
            s.close()
        proc.terminate()
        proc.wait(10)
