"""The review page: a Starlette app over the journal and the archive, for people and scripts.

It is a separate process from ``polishd run``: it reads the journal (SQLite in WAL, so it never blocks the
daemon) and the archive folders, and writes only reviewers' decisions (the journal's ``reviews`` table and
the ``review`` list of the image's manifest) and retries.

Security, since it serves a team's unreleased images:

* it binds to loopback unless ``[review].token`` is set (``polishd serve`` refuses otherwise); with a token
  every request needs ``Authorization: Bearer <token>`` or the login cookie made from it;
* every state-changing request carries the ``X-CSRF-Token`` header matching the page's ``polishd_csrf``
  cookie (a script using the bearer token needs none: no ambient credential rides along);
* files are served only as ``/files/{id}/{name}`` where ``name`` is one of the files the image's manifest
  lists, a regular file inside that folder (never a link); there is no directory listing;
* everything an image brings (its name, its prompt) is escaped: Jinja2's autoescape on every page, and the
  plain JavaScript writes text with ``textContent`` only; a Content-Security-Policy allows no inline script.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from daemon import archive as arc
from daemon.config import Config
from daemon.journal import Job, Journal
from stages.picture import UPRIGHT, view

HERE = Path(__file__).parent
CSRF_COOKIE, SESSION_COOKIE = "polishd_csrf", "polishd_session"
ID = re.compile(r"^[^/\\\x00]{1,255}$")
THUMB = 320
SERVED = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
          ".json": "application/json"}
STATES = ("awaiting", "flagged", "approved", "rejected", "failed", "all")


class Review:
    """What every request needs: the config, a journal connection per thread, where thumbnails live."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.journal = Journal(cfg.paths.state / "journal.sqlite3")
        self.thumbs = cfg.paths.state / "thumbnails"
        self.session = hmac.new(cfg.review.token.encode(), b"polishd review session", hashlib.sha256).hexdigest() \
            if cfg.review.token else ""

    # ------------------------------------------------------------------ one image
    def folder(self, image_id: str) -> Path | None:
        """The archive folder of an image id (its folder's name), or None: never a path outside the archive."""
        if not ID.match(image_id) or image_id in (".", ".."):
            return None
        folder = self.cfg.paths.archive / image_id
        if folder.parent != self.cfg.paths.archive or not folder.is_dir() or folder.is_symlink():
            return None
        return folder

    def lookup(self, image_id: str) -> tuple[Path, dict] | tuple[None, None]:
        """(folder, manifest) of an image id, or (None, None) when there is no such finished image."""
        folder = self.folder(image_id)
        manifest = self.manifest(folder) if folder else None
        return (folder, manifest) if manifest is not None else (None, None)

    @staticmethod
    def write_manifest(folder: Path, manifest: dict) -> None:
        """The review's own additions (``review``, ``picks``, ``runs``), written atomically like the runner's."""
        arc.atomic_write(folder / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())

    def manifest(self, folder: Path) -> dict | None:
        try:
            return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    @staticmethod
    def listed(manifest: dict) -> set[str]:
        """The files an image's manifest accounts for: the original (and its upright copy), the drawn sidecar
        masks, and every stage's outputs."""
        names = {_original(manifest), UPRIGHT, "00-sidecar-mask.png", "00-sidecar-remove.png"}
        for stage in manifest.get("stages", []):
            names.update(n for n in stage.get("outputs", []) if isinstance(n, str))
        return {n for n in names if n and "/" not in n and "\\" not in n and n not in (".", "..")}

    def summary(self, image_id: str, folder: Path, manifest: dict) -> dict:
        """The image page's data: every picture by role, the prompt, models and times, and the decisions."""
        products = _products(manifest)
        original = UPRIGHT if (folder / UPRIGHT).is_file() else _original(manifest)
        upscaled = {u["source"]: u["picture"]["name"] for u in products.get("upscaled") or [] if not u.get("engine")}
        master = upscaled.get("master") or (products.get("master") or {}).get("name") or original
        outputs = [n for s in manifest.get("stages", []) for n in s.get("outputs", [])]
        regions = [(n, n.replace("-before.", "-after.")) for n in outputs
                   if n.startswith("20-") and "-before." in n and n.replace("-before.", "-after.") in outputs]
        variants = [{"label": v["label"], "picture": v["picture"]["name"], "upscaled": upscaled.get(v["label"])}
                    for v in products.get("variants") or []]
        prompt = _prompt(folder / _original(manifest))
        comparisons = _comparisons(image_id, manifest, products, master)
        job = self.journal.by_archive(str(folder))
        return {
            "id": image_id, "name": manifest.get("source", {}).get("name", image_id), "status": manifest.get("status"),
            "original": original, "master": master,
            "detections": (products.get("detections") or {}).get("picture", {}).get("name"),
            "regions": [{"before": b, "after": a} for b, a in regions], "variants": variants,
            "prompt": {"positive": prompt.get("positive", ""), "negative": prompt.get("negative", ""),
                       "source": prompt.get("source", "")},
            "stages": [{"name": s["name"], "status": s["status"], "seconds": s.get("duration_s"),
                        "reason": s.get("reason", ""), "models": [m.get("name") or m.get("path", "")
                                                                  for m in s.get("models", [])]}
                       for s in manifest.get("stages", [])],
            "comparisons": comparisons,
            "review": manifest.get("review", []), "runs": manifest.get("runs", []),
            "overrides": manifest.get("overrides", {}),
            "state": {"approve": "approved", "reject": "rejected"}.get(job.review if job else None, "awaiting"),
            "job": job.id if job else None,
            "attention": arc.attention_of(manifest.get("stages", [])),
        }

    def thumbnail(self, image_id: str, folder: Path, manifest: dict) -> Path:
        """Made once from the finished master, then served from [paths].state/thumbnails."""
        self.thumbs.mkdir(parents=True, exist_ok=True)
        path = self.thumbs / (hashlib.sha256(image_id.encode()).hexdigest()[:32] + ".jpg")
        if not path.exists():
            master = self.summary(image_id, folder, manifest)["master"]
            with Image.open(folder / master) as im:
                im.draft("RGB", (THUMB * 2, THUMB * 2))
                rgb = view(im).flat()  # 16-bit scaled, transparency over grey, as the contact sheet shows it
            rgb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
            arc.atomic_write(path, _jpeg(rgb))
        return path

    def rerun(self, folder: Path, manifest: dict) -> Job:
        """Queues the archived image to run again in its own folder; the daemon takes it."""
        original = folder / _original(manifest)
        return self.journal.enqueue_rerun(folder, original, manifest.get("source", {}).get("name", folder.name),
                                          manifest.get("source", {}).get("sha256", ""))

    def retry_with(self, folder: Path, manifest: dict, settings: dict, who: str) -> tuple[Job, int]:
        """Keeps this run as runs/<n>/ (hard links: the files are replaced, never rewritten, so the links keep
        the old bytes; the original is not repeated there), writes the image's settings (its earlier ones with
        these on top) as its sidecar, and queues it again.  Returns (the queued job, n)."""
        from daemon import config as config_mod

        merged = config_mod.deep_merge(manifest.get("overrides") or {}, settings)
        config_mod.with_overrides(self.cfg, merged, "retry settings")  # ConfigError: the caller says why
        runs = folder / "runs"
        n = 1 + max([int(p.name) for p in runs.iterdir() if p.name.isdigit()] if runs.is_dir() else [0])
        keep = runs / str(n)
        keep.mkdir(parents=True)
        for p in sorted(folder.iterdir()):  # the original stays on top alone: it never changes, and intake
            if p.is_file() and not p.is_symlink() and not p.name.startswith("00-original."):  # takes no links
                try:
                    os.link(p, keep / p.name)
                except OSError:  # a file system without hard links: a copy
                    import shutil

                    shutil.copy2(p, keep / p.name)
        arc.fsync_dir(keep)
        (folder / "00-sidecar.toml").unlink(missing_ok=True)  # the settings now live in one sidecar
        arc.atomic_write(folder / "00-sidecar.json", (json.dumps(merged, indent=2) + "\n").encode())
        manifest.setdefault("runs", []).append({"run": n, "folder": f"runs/{n}", "who": who,
                                                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                                "settings": merged})
        self.write_manifest(folder, manifest)
        return self.rerun(folder, manifest), n

    def decide(self, image_id: str, folder: Path, decision: str, reason: str, variant: str | None, who: str) -> dict:
        """Recorded in the journal and in the manifest's ``review`` list (who, when, what)."""
        record = self.journal.add_review(str(folder), variant, decision, reason, who)
        manifest = self.manifest(folder) or {}
        entry = {"who": who, "at": datetime.fromtimestamp(record["at"], timezone.utc).isoformat(timespec="seconds"),
                 "decision": decision, "reason": reason, **({"variant": variant} if variant else {})}
        manifest.setdefault("review", []).append(entry)
        self.write_manifest(folder, manifest)
        return entry


def _comparisons(image_id: str, manifest: dict, products: dict, master: str) -> list[dict]:
    """The A/B comparisons of an image: per stage, its candidates (in an order that does not give away which
    is which), and the reviewer's pick once made."""
    stages = {s["name"]: s for s in manifest.get("stages", [])}
    found: list[tuple[str, list[dict]]] = []
    inpaint = stages.get("inpaint", {})
    alternatives = [a for a in (inpaint.get("details") or {}).get("alternatives", []) if "picture" in a]
    if alternatives:
        found.append(("inpaint", [{"choice": "main", "picture": f"{inpaint.get('prefix', '20')}-inpaint.png"}]
                      + [{"choice": a["label"], "picture": a["picture"]} for a in alternatives]))
    upscaled = [u for u in products.get("upscaled") or [] if u.get("engine") and u["source"] == "master"]
    if upscaled:
        main = stages.get("upscale", {}).get("params", {}).get("model", "upscale")
        main_picture = next((u["picture"]["name"] for u in products.get("upscaled") or []
                             if not u.get("engine") and u["source"] == "master"), master)
        found.append(("upscale", [{"choice": main, "picture": main_picture}]
                      + [{"choice": u["engine"], "picture": u["picture"]["name"]} for u in upscaled]))
    out = []
    for stage, candidates in found:
        for c in candidates:  # the page names a candidate by this token only: which one it is shows after the pick
            c["token"] = hashlib.sha256(f"{image_id}/{stage}/{c['choice']}".encode()).hexdigest()[:12]
        candidates.sort(key=lambda c: c["token"])
        picked = [p for p in manifest.get("picks", []) if p.get("stage") == stage]
        out.append({"stage": stage, "candidates": candidates, "picked": picked[-1]["choice"] if picked else None})
    return out


def _original(manifest: dict) -> str:
    ext = {"jpeg": "jpg"}.get(manifest.get("source", {}).get("format", "png"), manifest.get("source", {}).get("format"))
    return f"00-original.{ext}"


def _prompt(original: Path) -> dict:
    """The prompt the image carries (A1111 or ComfyUI metadata), read from the archived original."""
    from stages.prompts import from_image

    try:
        with Image.open(original) as im:
            found = from_image(im)
    except OSError:
        found = None
    return {"positive": found.positive, "negative": found.negative, "source": found.source} if found else {}


def _jpeg(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=82)
    return buf.getvalue()


# --------------------------------------------------------------------------- the app


def create_app(cfg: Config) -> Starlette:
    review = Review(cfg)
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
    templates = Jinja2Templates(env=env)  # autoescape on every page: names and prompts come from images

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        return templates.TemplateResponse(request, name, {"csrf": request.state.csrf, **context}, status_code=status)

    async def dashboard(request: Request) -> Response:
        from daemon.cli import status_data

        data = status_data(cfg, failures=20)
        return page(request, "dashboard.html", data=data)

    async def gallery(request: Request) -> Response:
        state, number = _state(request), _int(request.query_params.get("page"), 1)
        size = cfg.review.page_size
        jobs, total = review.journal.gallery(state, size, (number - 1) * size)
        items = [_item(j) for j in jobs]
        return page(request, "gallery.html", items=items, state=state, states=STATES, page=number,
                    pages=max(1, -(-total // size)), total=total)

    async def image(request: Request) -> Response:
        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return page(request, "missing.html", status=404, id=image_id)
        data = review.summary(image_id, folder, manifest)
        data["previous"], data["next"] = _neighbours(review, folder)
        return page(request, "image.html", image=data)

    async def files(request: Request) -> Response:
        image_id, name = request.path_params["id"], request.path_params["name"]
        folder, manifest = review.lookup(image_id)
        if manifest is None or name not in review.listed(manifest) or Path(name).suffix.lower() not in SERVED:
            return _not_found()
        return _file(folder, name)

    async def candidate(request: Request) -> Response:
        """An A/B candidate's picture by its token: the page does not give away which engine made it."""
        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return _not_found()
        pictures = {c["token"]: c["picture"] for comp in review.summary(image_id, folder, manifest)["comparisons"]
                    for c in comp["candidates"]}
        name = pictures.get(request.path_params["token"])
        return _file(folder, name) if name else _not_found()

    async def thumb(request: Request) -> Response:
        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return _not_found()
        return FileResponse(review.thumbnail(image_id, folder, manifest), media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400"})

    async def api_images(request: Request) -> Response:
        state = _state(request)
        limit = min(500, _int(request.query_params.get("limit"), cfg.review.page_size))
        jobs, total = review.journal.gallery(state, limit, _int(request.query_params.get("offset"), 0, low=0))
        return JSONResponse({"state": state, "total": total, "images": [_item(j) for j in jobs]})

    async def api_image(request: Request) -> Response:
        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return _no_image(image_id)
        return JSONResponse(review.summary(image_id, folder, manifest))

    async def api_review(request: Request) -> Response:
        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return _no_image(image_id)
        body = await _json(request)
        decision, reason, variant = body.get("decision"), body.get("reason", ""), body.get("variant")
        if decision not in ("approve", "reject"):
            return JSONResponse({"error": 'decision must be "approve" or "reject"'}, status_code=422)
        if not isinstance(reason, str) or len(reason) > 2000:
            return JSONResponse({"error": "reason must be text of at most 2000 characters"}, status_code=422)
        labels = [v["label"] for v in _products(manifest).get("variants") or []]
        if variant is not None and variant not in labels:
            return JSONResponse({"error": f"no variant {variant!r} (variants: {', '.join(labels) or 'none'})"},
                                status_code=422)
        who = _who(request)
        entry = review.decide(image_id, folder, decision, reason, variant, who)
        out = {"recorded": entry}
        if decision == "approve" and variant is None and cfg.deliver.require_review:
            job = review.rerun(folder, review.manifest(folder))
            out["delivery"] = f"queued as job #{job.id}: delivered when polishd run takes it"
        return JSONResponse(out)

    async def api_pick(request: Request) -> Response:
        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return _no_image(image_id)
        body = await _json(request)
        summary = review.summary(image_id, folder, manifest)
        comparison = next((c for c in summary["comparisons"] if c["stage"] == body.get("stage")), None)
        if comparison is None:
            return JSONResponse({"error": f"no comparison for stage {body.get('stage')!r} on this image"},
                                status_code=422)
        shown = [c["choice"] for c in comparison["candidates"]]
        by_token = {c["token"]: c["choice"] for c in comparison["candidates"]}
        choice = by_token.get(body.get("choice"), body.get("choice"))  # the page's token, or an engine's name
        if choice not in shown:
            return JSONResponse({"error": f"choice must be one of {', '.join(shown)}"}, status_code=422)
        who = _who(request)
        record = review.journal.add_pick(str(folder), comparison["stage"], choice, shown, who)
        entry = {"stage": record["stage"], "choice": record["choice"], "shown": shown, "who": who,
                 "at": datetime.fromtimestamp(record["at"], timezone.utc).isoformat(timespec="seconds")}
        manifest.setdefault("picks", []).append(entry)
        review.write_manifest(folder, manifest)
        job = review.rerun(folder, manifest)  # the pick becomes what is delivered
        return JSONResponse({"recorded": entry, "candidates": comparison["candidates"],
                             "delivery": f"queued as job #{job.id}"})

    async def comparisons(request: Request) -> Response:
        return page(request, "comparisons.html", rates=review.journal.win_rates())

    async def api_comparisons(request: Request) -> Response:
        return JSONResponse({"engines": review.journal.win_rates()})

    async def api_retry_with(request: Request) -> Response:
        from daemon.config import ConfigError

        image_id = request.path_params["id"]
        folder, manifest = review.lookup(image_id)
        if manifest is None:
            return _no_image(image_id)
        body = await _json(request)
        settings = body.get("settings", body)
        if not isinstance(settings, dict) or not settings:
            return JSONResponse({"error": "send the image's settings: tables of pipeline.toml, e.g. "
                                          '{"inpaint": {"strength": 0.4}}'}, status_code=422)
        try:
            job, n = review.retry_with(folder, manifest, settings, _who(request))
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse({"queued": job.id, "previous_run": f"runs/{n}"})

    async def api_retry(request: Request) -> Response:
        from daemon.cli import retry_one

        job = review.journal.get(_int(request.path_params["job"], 0))
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        ok, message = retry_one(cfg, review.journal, job)
        return JSONResponse({"queued": ok, "message": message}, status_code=200 if ok else 409)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login.html")
        body = await _json(request)
        if not cfg.review.token or not hmac.compare_digest(str(body.get("token", "")), cfg.review.token):
            return JSONResponse({"error": "wrong token"}, status_code=403)
        response = JSONResponse({"ok": True})
        response.set_cookie(SESSION_COOKIE, review.session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
        return response

    routes = [
        Route("/", dashboard), Route("/gallery", gallery), Route("/images/{id}", image),
        Route("/files/{id}/{name}", files), Route("/thumbs/{id}", thumb),
        Route("/candidates/{id}/{token}", candidate),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/images", api_images), Route("/api/images/{id}", api_image),
        Route("/api/images/{id}/review", api_review, methods=["POST"]),
        Route("/api/images/{id}/retry", api_retry_with, methods=["POST"]),
        Route("/api/images/{id}/pick", api_pick, methods=["POST"]),
        Route("/comparisons", comparisons), Route("/api/comparisons", api_comparisons),
        Route("/api/jobs/{job}/retry", api_retry, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def guard(request: Request, call_next):
        bearer = request.headers.get("authorization", "")
        by_token = bool(cfg.review.token) and hmac.compare_digest(bearer, f"Bearer {cfg.review.token}")
        by_cookie = bool(review.session) and hmac.compare_digest(request.cookies.get(SESSION_COOKIE, ""),
                                                                 review.session)
        open_paths = request.url.path == "/login" or request.url.path.startswith("/static/")
        if cfg.review.token and not (by_token or by_cookie or open_paths):
            if request.url.path.startswith("/api/") or request.method != "GET":
                return JSONResponse({"error": "log in first: Authorization: Bearer <token>"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        request.state.csrf = csrf
        if request.method not in ("GET", "HEAD", "OPTIONS") and not by_token:
            sent = request.headers.get("x-csrf-token", "")
            if not (request.cookies.get(CSRF_COOKIE) and hmac.compare_digest(sent, request.cookies[CSRF_COOKIE])):
                return JSONResponse({"error": "missing or wrong X-CSRF-Token"}, status_code=403)
        response = await call_next(request)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf, samesite="strict", secure=request.url.scheme == "https")
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; script-src 'self'; "
                                                       "style-src 'self'; frame-ancestors 'none'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    app = Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
    app.state.review = review
    return app


def _products(manifest: dict) -> dict:
    """The typed hand-offs of an image as its manifest records them, later stages' over earlier ones'."""
    products: dict = {}
    for stage in manifest.get("stages", []):
        products.update(stage.get("products", {}))
    return products


def _no_image(image_id: str) -> Response:
    return JSONResponse({"error": f"no image {image_id!r}"}, status_code=404)


def _not_found() -> Response:
    return Response("not found", status_code=404, media_type="text/plain")


def _file(folder: Path, name: str) -> Response:
    """A file of the image's folder: a regular file there (not a link, nothing beside or above it)."""
    path = folder / name
    try:
        st = os.lstat(path)
    except OSError:
        return _not_found()
    if not stat.S_ISREG(st.st_mode) or path.resolve().parent != folder.resolve() \
            or path.suffix.lower() not in SERVED:
        return _not_found()
    return FileResponse(path, media_type=SERVED[path.suffix.lower()],
                        headers={"Cache-Control": "private, max-age=3600"})


def _state(request: Request) -> str:
    state = request.query_params.get("state", "awaiting")
    return state if state in STATES else "awaiting"


def _int(value, default: int, low: int = 1) -> int:
    try:
        return max(low, int(value))
    except (TypeError, ValueError):
        return default


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _who(request: Request) -> str:
    name = request.headers.get("x-reviewer") or request.cookies.get("polishd_reviewer") or "reviewer"
    return re.sub(r"[\x00-\x1f]", "", name)[:80] or "reviewer"


def _item(job: Job) -> dict:
    image_id = Path(job.archive).name if job.archive else None
    return {"id": image_id, "job": job.id, "name": job.name, "state": job.state,
            "review": {"approve": "approved", "reject": "rejected"}.get(job.review, "awaiting"),
            "finished": job.finished, "error": job.last_error if job.state == "failed" else None,
            "attention": job.attention.splitlines() if job.attention else []}


def _neighbours(review: Review, folder: Path) -> tuple[str | None, str | None]:
    """The previous and next image in the gallery's order (all finished images, newest first)."""
    newer, older = review.journal.neighbours(str(folder))
    return (Path(newer).name if newer else None), (Path(older).name if older else None)


def serve(cfg: Config, host: str, port: int) -> int:
    import uvicorn

    app = create_app(cfg)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                timeout_graceful_shutdown=5)
    return 0
