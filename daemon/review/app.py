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

import contextlib
import hmac
import signal
from pathlib import Path

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from uvicorn.protocols.http.h11_impl import H11Protocol

from daemon.config import Config
from daemon.review import handlers as h
from daemon.review.handlers import SESSION_COOKIE
from daemon.review.images import Review

HERE = Path(__file__).parent
CSRF_COOKIE = "polishd_csrf"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

ROUTES = [
    Route("/", h.dashboard), Route("/gallery", h.gallery), Route("/images/{id}", h.image_page),
    Route("/files/{id}/{name}", h.files), Route("/thumbs/{id}", h.thumb),
    Route("/candidates/{id}/{token}", h.candidate), Route("/delivered/{id}/{preset}", h.delivered),
    Route("/login", h.login, methods=["GET", "POST"]),
    Route("/favicon.ico", h.no_icon),
    Route("/api/images", h.api_images), Route("/api/images/{id}", h.api_image),
    Route("/api/images/{id}/review", h.api_review, methods=["POST"]),
    Route("/api/images/{id}/retry", h.api_retry_with, methods=["POST"]),
    Route("/api/images/{id}/pick", h.api_pick, methods=["POST"]),
    Route("/comparisons", h.comparisons_page), Route("/api/comparisons", h.api_comparisons),
    Route("/api/jobs/{job}/retry", h.api_retry, methods=["POST"]),
    Route("/api/jobs", h.api_upload, methods=["POST"]), Route("/api/jobs/{job}", h.api_job),
    Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
]


def _same(a: str, b: str) -> bool:
    """A constant-time comparison of two texts, whatever characters a client sent."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def _host_allowed(request: Request, review: Review) -> bool:
    """The Host header names this server: loopback names, the bound address, or one of [review].hosts (a page
    reached through another name is DNS rebinding: a foreign site's script talking to it)."""
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    allowed = {"localhost", "127.0.0.1", "::1", review.cfg.review.host.lower(),
               *(h.lower() for h in review.cfg.review.hosts)}
    return name in allowed


async def guard(request: Request, call_next):
    """The Host, the token (bearer or login cookie), the CSRF pair on every state-changing request (a cookie this
    process signed, and the same value in the header), bounded bodies, security headers."""
    review: Review = request.app.state.review
    if not _host_allowed(request, review):
        return JSONResponse({"error": "this server is not known by that name (add it to [review].hosts)"},
                            status_code=421)
    token = review.cfg.review.token
    by_token = bool(token) and _same(request.headers.get("authorization", ""), f"Bearer {token}")
    by_cookie = bool(review.session) and _same(request.cookies.get(SESSION_COOKIE, ""), review.session)
    open_paths = request.url.path == "/login" or request.url.path.startswith("/static/")
    if token and not (by_token or by_cookie or open_paths):
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"error": "log in first: Authorization: Bearer <token>"}, status_code=401)
        return RedirectResponse("/login", status_code=303)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    fresh = not review.csrf_valid(cookie)
    csrf = review.csrf_token() if fresh else cookie
    request.state.csrf = csrf
    changes = request.method not in ("GET", "HEAD", "OPTIONS") and not by_token
    if changes and (fresh or not _same(request.headers.get("x-csrf-token", ""), cookie)):
        return JSONResponse({"error": "missing or wrong X-CSRF-Token"}, status_code=403)
    try:
        response = await call_next(request)
    except h.TooLarge:
        return JSONResponse({"error": f"the request body is larger than {h.MAX_BODY} bytes"}, status_code=413)
    if fresh:
        response.set_cookie(CSRF_COOKIE, csrf, samesite="strict", secure=request.url.scheme == "https")
    response.headers.update(SECURITY_HEADERS)
    return response


def create_app(cfg: Config) -> Starlette:
    app = Starlette(routes=ROUTES, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
    app.state.review = Review(cfg)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
    app.state.templates = Jinja2Templates(env=env)  # autoescape on every page: names and prompts come from images
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGTERM and SIGINT end it gracefully with exit status 0, as ``polishd run`` does
    (uvicorn's own handling raises the signal again once it has stopped, and the process ends with 143)."""

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


HEAD_TIMEOUT = 10.0   # seconds a connection has to send a whole request head, on opening and after each answer
CONNECTIONS = 256     # connections at once; a request past that is answered 503 at once, never queued


class _HeadTimeout(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head, which uvicorn lacks: a connection that has
    not sent a whole request line and headers within HEAD_TIMEOUT of opening, or of its last answer, is
    closed, so a crowd of half-sent requests (slowloris) holds the page for seconds, not for ever."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        armed = self.cycle
        self.loop.call_later(HEAD_TIMEOUT, self._head_due, armed)

    def _head_due(self, armed) -> None:
        waiting = self.cycle is armed and (self.cycle is None or self.cycle.response_complete)
        if waiting and not self.transport.is_closing():  # no new request began since: its head never came
            self.transport.close()


def serve(cfg: Config, host: str, port: int) -> int:
    # Bounded: CONNECTIONS at once, a head within HEAD_TIMEOUT, idle keep-alive connections closed after 5 s,
    # request heads of 16 KB at most, bodies bounded by the app (1 MB).
    config = uvicorn.Config(create_app(cfg), host=host, port=port, log_config=None, access_log=False,
                            server_header=False, timeout_graceful_shutdown=5, limit_concurrency=CONNECTIONS,
                            timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024, http=_HeadTimeout)
    _Server(config).run()
    return 0
