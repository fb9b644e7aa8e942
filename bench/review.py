"""The review page with 2,000 archived images: server time of a gallery page, the JSON list and an image page,
and screenshots of the dashboard, the gallery and an image page in Debian's Chromium.

    python -m bench.review [--images 2000] [--repeat 30]

Three real images go through the runner (detection, two infill variants, delivery); the archive is then
filled to ``--images`` with copies of their folders, each with its own name and a job in the journal, as a
team's month would leave it. Times are measured in-process (Starlette's test client: the server's own time,
no network), median and 95th percentile over ``--repeat`` requests spread over the gallery's pages, with the
thumbnails already made (they are made once, then served from the cache; the first making is timed too).

Writes bench/out/review.md and bench/out/review-{dashboard,gallery,image}.png.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.kit.review_archive import make_archive
from bench.upscale_cpu import cpu
from daemon.archive import ArchiveFolder
from daemon.journal import Journal

OUT = Path(__file__).resolve().parent / "out"


def fill(cfg, ids: dict[str, str], total: int) -> list[str]:
    """Copies of the real folders under new names, each with a finished job, up to ``total`` images, spread
    over the last 24 hours as a team's day would leave them (busier in working hours; about 2 % failed; each
    done job with its stages' seconds near those of the real runs; one image in ten reviewed, most approved;
    a few files still queued)."""
    rng = random.Random(7)
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    db = journal._conn()
    sources = list(ids.values())
    made = list(sources)
    now = time.time()
    real = {src: {s.name: s.duration_s for s in ArchiveFolder(cfg.paths.archive / src).read_manifest().stages
                  if s.done and s.duration_s} for src in sources}
    at = now
    with journal._tx():
        for i in range(total - len(sources)):
            hour = time.localtime(at).tm_hour
            at -= rng.expovariate(1.0) * (25 if 9 <= hour < 19 else 80)  # seconds between two endings
            src = sources[i % len(sources)]
            name = f"batch-{i:05d}-{src.rsplit('-', 1)[1]}"
            image = f"batch-{i:05d}.png"
            if rng.random() < 0.02:
                db.execute("INSERT INTO jobs(source,name,sha256,bytes,mtime,state,created,finished,last_error,"
                           "error_stage) VALUES (?,?,?,?,?,'failed',?,?,?,?)",
                           (str(cfg.paths.failed / image), image, f"{i:064x}", 1, now, at, at,
                            "InputError: not a PNG, JPEG or WebP image", "intake"))
                continue
            folder = cfg.paths.archive / name
            shutil.copytree(cfg.paths.archive / src, folder)
            archived = ArchiveFolder(folder)
            manifest = archived.read_manifest()
            manifest.id, manifest.source.name = name, image
            archived.write_manifest(manifest)
            timings = {stage: round(s * rng.lognormvariate(0, 0.25), 3) for stage, s in real[src].items()}
            db.execute("INSERT INTO jobs(source,name,sha256,bytes,mtime,state,created,finished,archive,timings)"
                       " VALUES (?,?,?,?,?,'done',?,?,?,?)",
                       (str(cfg.paths.inbox / image), image, f"{i:064x}", 1, now, at, at, str(folder),
                        json.dumps(timings)))
            made.append(name)
        for k in range(4):
            db.execute("INSERT INTO jobs(source,name,sha256,bytes,mtime,state,created) VALUES (?,?,?,?,?,'queued',?)",
                       (str(cfg.paths.inbox / f"new-{k}.png"), f"new-{k}.png", f"{10**6 + k:064x}", 1, now,
                        now - 60 * (k + 1)))
    for name in made[3::10]:
        journal.add_review(str(cfg.paths.archive / name), None, "reject" if rng.random() < 0.12 else "approve",
                           "", "lead")
    journal.close()
    return made


def timed(client, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t0 = time.perf_counter()
        r = client.get(url)
        out.append(1000 * (time.perf_counter() - t0))
        assert r.status_code == 200, (url, r.status_code)
    return out


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]


def screenshots(cfg, image: str) -> None:
    import shutil as sh

    from playwright.sync_api import sync_playwright

    from bench.kit.browser import ARGS
    from bench.kit.serve import start_serve

    chromium = sh.which("chromium")
    if chromium is None:
        print("chromium is not installed: no screenshots")
        return
    proc, url = start_serve(cfg.source, cfg.paths.state / "serve.log", "--log-level", "warning")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            for path, name in (("/", "dashboard"), ("/gallery?state=all", "gallery"), (f"/images/{image}", "image")):
                if name == "image":  # the slider, the detections and the variants in one picture
                    page.set_viewport_size({"width": 1280, "height": 1900})
                elif name == "dashboard":  # every figure of the day in one picture
                    page.set_viewport_size({"width": 1280, "height": 1500})
                page.goto(f"{url}{path}")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / f"review-{name}.png"), full_page=False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    from starlette.testclient import TestClient

    from daemon.review.app import create_app

    with tempfile.TemporaryDirectory(prefix="polishd-review-") as tmp:
        cfg, ids = make_archive(Path(tmp))
        t0 = time.perf_counter()
        made = fill(cfg, ids, args.images)
        filled = time.perf_counter() - t0
        client = TestClient(create_app(cfg), base_url=f"http://127.0.0.1:{cfg.review.port}")  # a name it answers
        pages = -(-args.images // cfg.review.page_size)
        first_page = [f"/thumbs/{i}" for i in made[-cfg.review.page_size:]]
        thumbs_cold = timed(client, first_page)
        for i in made:  # every thumbnail made once, as browsing the gallery would
            client.get(f"/thumbs/{i}")
        spread = [1 + (k * 7919) % pages for k in range(args.repeat)]
        gallery = timed(client, [f"/gallery?state=all&page={n}" for n in spread])
        awaiting = timed(client, [f"/gallery?state=awaiting&page={n}" for n in spread])
        listing = timed(client, [f"/api/images?state=all&limit=48&offset={48 * (n - 1)}" for n in spread])
        image = timed(client, [f"/images/{made[(k * 131) % len(made)]}" for k in range(args.repeat)])
        dashboard = timed(client, ["/"] * args.repeat)
        thumbs_warm = timed(client, first_page)
        OUT.mkdir(parents=True, exist_ok=True)
        screenshots(cfg, ids["prompted.png"])
    rows = [("gallery page (all, 48 thumbnails)", gallery), ("gallery page (awaiting)", awaiting),
            ("GET /api/images (48)", listing), ("image page", image), ("dashboard (24 h of figures)", dashboard),
            ("thumbnail, first time (made)", thumbs_cold),
            ("thumbnail, cached", thumbs_warm)]
    lines = ["# Review page: server time with an archive of many images", "",
             f"`python -m bench.review --images {args.images} --repeat {args.repeat}`", "",
             f"Machine: {cpu()[0]}, 2 cores. {args.images} archived images ({filled:.1f} s to lay out), "
             f"{pages} gallery pages of {cfg.review.page_size}; in-process requests (no network).", "",
             "| request | median ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {name} | {statistics.median(v):.1f} | {_p95(v):.1f} |" for name, v in rows]
    lines += ["", "Goal: a gallery page under 300 ms of server time with 2,000 archived images.", ""]
    (OUT / "review.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
