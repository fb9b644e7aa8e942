"""The review page's handlers, one per route: each reads what it needs from ``request.app.state``."""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from daemon import ops
from daemon.config import ConfigError
from daemon.review import uploads
from daemon.review.dashboard import dashboard as figures
from daemon.review.images import Archived, Review, comparisons, deliveries, item, variant_labels
from stages.records import to_json

SESSION_COOKIE = "polishd_session"
SERVED = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
          ".json": "application/json"}
STATES = ("awaiting", "flagged", "approved", "rejected", "failed", "all")


def _review(request: Request) -> Review:
    return request.app.state.review


def page(request: Request, name: str, status: int = 200, **context) -> Response:
    templates = request.app.state.templates
    return templates.TemplateResponse(request, name, {"csrf": request.state.csrf, **context}, status_code=status)


def _image(request: Request) -> Archived | None:
    return _review(request).lookup(request.path_params["id"])


# --------------------------------------------------------------------------- pages


async def dashboard(request: Request) -> Response:
    review = _review(request)
    return page(request, "dashboard.html", data=figures(review.cfg, review.journal))


async def gallery(request: Request) -> Response:
    review = _review(request)
    state, number = _state(request), _int(request.query_params.get("page"), 1)
    size = review.cfg.review.page_size
    jobs, total = review.journal.gallery(state, size, (number - 1) * size)
    return page(request, "gallery.html", items=[item(j) for j in jobs], state=state, states=STATES, page=number,
                pages=max(1, -(-total // size)), total=total)


async def image_page(request: Request) -> Response:
    image = _image(request)
    if image is None:
        return page(request, "missing.html", status=404, id=request.path_params["id"])
    data = _review(request).summary(image)
    newer, older = _review(request).journal.neighbours(str(image.folder))
    data["previous"], data["next"] = (Path(newer).name if newer else None), (Path(older).name if older else None)
    return page(request, "image.html", image=data)


async def comparisons_page(request: Request) -> Response:
    return page(request, "comparisons.html", rates=_review(request).journal.win_rates())


async def login(request: Request) -> Response:
    if request.method == "GET":
        return page(request, "login.html")
    review = _review(request)
    body = await _json(request)
    token = review.cfg.review.token
    client = request.client.host if request.client else ""
    if not review.login_allowed(client):
        return JSONResponse({"error": "too many tries; wait a minute"}, status_code=429)
    if not token or not hmac.compare_digest(str(body.get("token", "")).encode(), token.encode()):
        review.login_failed(client)
        return JSONResponse({"error": "wrong token"}, status_code=403)
    response = JSONResponse({"ok": True})
    response.set_cookie(SESSION_COOKIE, review.session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
    return response


# --------------------------------------------------------------------------- files


async def files(request: Request) -> Response:
    image, name = _image(request), request.path_params["name"]
    if image is None or name not in image.manifest.listed() or Path(name).suffix.lower() not in SERVED:
        return not_found()
    return _file(image.folder, name)


async def delivered(request: Request) -> Response:
    """A delivered file, by its preset's name as the image's manifest lists it (never by a path)."""
    image = _image(request)
    path = _review(request).delivered_file(image, request.path_params["preset"]) if image is not None else None
    if path is None or path.suffix.lower() not in SERVED:
        return not_found()
    return FileResponse(path, media_type=SERVED[path.suffix.lower()], headers={"Cache-Control": "private, max-age=60"})


async def candidate(request: Request) -> Response:
    """An A/B candidate's picture by its token: the page does not give away which engine made it."""
    image = _image(request)
    if image is None:
        return not_found()
    pictures = {c["token"]: c["picture"] for comp in comparisons(image) for c in comp["candidates"]}
    name = pictures.get(request.path_params["token"])
    return _file(image.folder, name) if name else not_found()


async def thumb(request: Request) -> Response:
    image = _image(request)
    if image is None:
        return not_found()
    return FileResponse(_review(request).thumbnail(image), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})


# --------------------------------------------------------------------------- the API


async def api_images(request: Request) -> Response:
    review = _review(request)
    state = _state(request)
    limit = min(500, _int(request.query_params.get("limit"), review.cfg.review.page_size))
    jobs, total = review.journal.gallery(state, limit, _int(request.query_params.get("offset"), 0, low=0))
    return JSONResponse({"state": state, "total": total, "images": [item(j) for j in jobs]})


async def api_image(request: Request) -> Response:
    image = _image(request)
    if image is None:
        return _no_image(request)
    return JSONResponse(_review(request).summary(image))


async def api_review(request: Request) -> Response:
    image = _image(request)
    if image is None:
        return _no_image(request)
    review = _review(request)
    body = await _json(request)
    decision, reason, variant = body.get("decision"), body.get("reason", ""), body.get("variant")
    if decision not in ("approve", "reject"):
        return _unprocessable('decision must be "approve" or "reject"')
    if not isinstance(reason, str) or len(reason) > 2000:
        return _unprocessable("reason must be text of at most 2000 characters")
    labels = variant_labels(image)
    if variant is not None and variant not in labels:
        return _unprocessable(f"no variant {variant!r} (variants: {', '.join(labels) or 'none'})")
    entry = review.decide(image, decision, reason, variant, _who(request))
    out = {"recorded": to_json(entry)}
    if decision == "approve" and _approval_delivers(review.cfg.deliver, image, variant):
        job = review.rerun(image)
        out["delivery"] = f"queued as job #{job.id}: delivered when polishd run takes it"
    return JSONResponse(out)


def _approval_delivers(deliver, image, variant: str | None) -> bool:
    """Whether an approval lets something be delivered that was held back: the image under
    ``require_review``, or a variant the infill alone made (``infill_variants = "approved"``)."""
    if variant is None and deliver.require_review:
        return True
    if deliver.infill_variants != "approved":
        return False
    held = [v.label for v in image.manifest.products().variants or () if v.infill]
    return bool(held) and (variant is None or variant in held)


async def api_pick(request: Request) -> Response:
    image = _image(request)
    if image is None:
        return _no_image(request)
    body = await _json(request)
    comparison = next((c for c in comparisons(image) if c["stage"] == body.get("stage")), None)
    if comparison is None:
        return _unprocessable(f"no comparison for stage {body.get('stage')!r} on this image")
    shown = [c["choice"] for c in comparison["candidates"]]
    by_token = {c["token"]: c["choice"] for c in comparison["candidates"]}
    choice = by_token.get(body.get("choice"), body.get("choice"))  # the page's token, or an engine's name
    if choice not in shown:
        return _unprocessable(f"choice must be one of {', '.join(shown)}")
    review = _review(request)
    entry = review.pick(image, comparison["stage"], choice, shown, _who(request))
    job = review.rerun(image)  # the pick becomes what is delivered
    return JSONResponse({"recorded": to_json(entry), "candidates": comparison["candidates"],
                         "delivery": f"queued as job #{job.id}"})


async def api_comparisons(request: Request) -> Response:
    return JSONResponse({"engines": _review(request).journal.win_rates()})


async def api_retry_with(request: Request) -> Response:
    image = _image(request)
    if image is None:
        return _no_image(request)
    body = await _json(request)
    settings = body.get("settings", body)
    if not isinstance(settings, dict) or not settings:
        return _unprocessable("send the image's settings: tables of pipeline.toml, e.g. "
                              '{"inpaint": {"strength": 0.4}}')
    try:
        job, n = _review(request).retry_with(image, settings, _who(request))
    except ConfigError as exc:
        return _unprocessable(str(exc))
    return JSONResponse({"queued": job.id, "previous_run": f"runs/{n}"})


async def api_retry(request: Request) -> Response:
    review = _review(request)
    job = review.journal.get(_int(request.path_params["job"], 0))
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    ok, message = ops.retry_one(review.cfg, review.journal, job)
    return JSONResponse({"queued": ok, "message": message}, status_code=200 if ok else 409)


async def api_upload(request: Request) -> Response:
    """POST /api/jobs: a multipart ``file`` (and optional ``settings``, a sidecar's TOML or JSON)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    review = _review(request)
    cfg = review.cfg
    if not cfg.review.token:
        return JSONResponse({"error": "uploads need [review].token: without one, any web page open on this machine "
                                      "could post files into the pipeline"}, status_code=403)
    try:
        uploads.check_length(request.headers.get("content-length"), cfg)
        if not uploads.RECEIVING.acquire(blocking=False):
            raise uploads.Refused(429, f"{uploads.UPLOADS_AT_ONCE} uploads are being received; send it again soon")
        try:
            form = await request.form(max_files=1, max_fields=2, max_part_size=uploads.SETTINGS_LIMIT)
            try:
                file, settings = form.get("file"), form.get("settings")
                if not isinstance(file, UploadFile):
                    raise uploads.Refused(400, "send the image as the multipart field 'file'")
                data = await file.read(cfg.daemon.max_bytes + 1)
                raw = settings.encode() if isinstance(settings, str) else \
                    await settings.read(uploads.SETTINGS_LIMIT + 1) if isinstance(settings, UploadFile) else None
                job = await run_in_threadpool(uploads.accept, cfg, review.journal, file.filename, data, raw)
            finally:
                await form.close()
        finally:
            uploads.RECEIVING.release()
    except uploads.Refused as exc:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)
    except HTTPException as exc:  # a multipart body that does not parse, or past its bounds
        return JSONResponse({"error": f"the multipart body is refused: {exc.detail}"}, status_code=400)
    return JSONResponse({"job": job.id, "archive": uploads.archive_id(job), "state": job.state,
                         "url": f"/api/jobs/{job.id}"}, status_code=201, headers={"Location": f"/api/jobs/{job.id}"})


async def api_job(request: Request) -> Response:
    """GET /api/jobs/<id>: its state and, once finished, its outputs and deliverables by URL."""
    review = _review(request)
    job = review.journal.get(_int(request.path_params["job"], 0))
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    out = {"job": job.id, "name": job.name, "state": job.state, "attempts": job.attempts, "error": job.last_error,
           "archive": uploads.archive_id(job), "duplicate_of": job.dup_of}
    first = review.journal.get(job.dup_of) if job.dup_of else job
    image = review.lookup(Path(first.archive).name) if first and first.archive else None
    if image is not None and job.state in ("done", "duplicate"):
        base = f"/files/{quote(image.id)}"
        out.update(archive=image.id, page=f"/images/{quote(image.id)}",
                   outputs=[{"name": n, "url": f"{base}/{quote(n)}"} for n in image.manifest.outputs()],
                   deliverables=[{**d, "url": f"/delivered/{quote(image.id)}/{quote(d['preset'])}"}
                                 for d in deliveries(image.manifest)["files"]],
                   needs_review=image.manifest.attention())
    return JSONResponse(out)


async def no_icon(request: Request) -> Response:
    return Response(status_code=204)


# --------------------------------------------------------------------------- helpers


def not_found() -> Response:
    return Response("not found", status_code=404, media_type="text/plain")


def _no_image(request: Request) -> Response:
    return JSONResponse({"error": f"no image {request.path_params['id']!r}"}, status_code=404)


def _unprocessable(why: str) -> Response:
    return JSONResponse({"error": why}, status_code=422)


def _file(folder: Path, name: str) -> Response:
    """A file of the image's folder: a regular file there (not a link, nothing beside or above it)."""
    path = folder / name
    try:
        st = os.lstat(path)
    except OSError:
        return not_found()
    if not stat.S_ISREG(st.st_mode) or path.resolve().parent != folder.resolve() \
            or path.suffix.lower() not in SERVED:
        return not_found()
    return FileResponse(path, media_type=SERVED[path.suffix.lower()],
                        headers={"Cache-Control": "private, max-age=3600"})


def _state(request: Request) -> str:
    state = request.query_params.get("state", "awaiting")
    return state if state in STATES else "awaiting"


MAX_BODY = 1 << 20   # bytes a request body may have: a review, a pick, a retry's settings are far smaller
MAX_NUMBER = 1_000_000  # a page number or an id past this is no page


def _int(value, default: int, low: int = 1) -> int:
    try:
        number = int(str(value)[:12])
    except (TypeError, ValueError):
        return default
    return min(MAX_NUMBER, max(low, number))


class TooLarge(Exception):
    pass


async def _json(request: Request) -> dict:
    """The request's JSON object, read at most ``MAX_BODY`` bytes (TooLarge past that: 413); a body that is
    not a JSON object, or nests past what the parser can take, is an empty one."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > MAX_BODY:
        raise TooLarge
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise TooLarge
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _who(request: Request) -> str:
    name = request.headers.get("x-reviewer") or request.cookies.get("polishd_reviewer") or "reviewer"
    return re.sub(r"[\x00-\x1f]", "", name)[:80] or "reviewer"
