"""Word back: each [[notify.webhook]] is told of the events it asks for — an image done, failed, needing a
person's look, approved, delivered — in a JSON body signed with its secret.

The calls are written into the journal's outbox in the same transaction as what they tell of (a job's end, a
reviewer's decision), so a crash never loses one; ``polishd run`` sends them, one thread per webhook so that a
receiver that does not answer holds up nobody but its own calls, and never the pipeline.  A call is done
when a 2xx comes back; otherwise it is tried again after 5 s, 10 s, 20 s … (at most an hour apart), and given
up after ``give_up`` seconds — ``status`` and the dashboard show what waits, what fails and why.  Each call
carries an id (in the body and in ``X-Polishd-Delivery``) that stays the same across tries and restarts: a
receiver that may have answered a try that was then lost (a kill at the wrong moment) sees the id again and
drops the copy.  ``polishd process`` tries its own calls once as it ends; what does not take waits for ``run``.

Each request: ``POST`` the body, ``Content-Type: application/json``, ``X-Polishd-Event: <event>``,
``X-Polishd-Delivery: <id>``, ``X-Polishd-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``.
Redirects are not followed; only the answer's status is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.config import Config, WebhookConfig, redact
from daemon.journal import Job, Journal

log = structlog.get_logger("polishd.webhooks")

BACKOFF_FIRST, BACKOFF_LONGEST = 5.0, 3600.0


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def calls(cfg: Config, events: list[str], payload: dict) -> list[tuple[str, str, str, str]]:
    """The outbox rows (id, url, event, body) for ``events`` of one image, one per webhook that asks for it."""
    out = []
    for hook in cfg.notify.webhook:
        for event in events:
            if event in hook.events:
                call = uuid.uuid4().hex
                body = {"id": call, "event": event, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **payload}
                out.append((call, hook.url, event, json.dumps(body, ensure_ascii=False, default=str)))
    return out


def job_payload(job: Job, state: str, archive: Path | None, manifest=None, error: str | None = None) -> dict:
    """What a receiver is told of an image: the job, its state, its archive, its outputs and deliverables."""
    deliver = manifest.details("deliver") if manifest is not None else None
    return {
        "job": job.id, "image": job.name, "state": state, "api": f"/api/jobs/{job.id}",
        "archive": archive.name if archive else None, "archive_path": str(archive) if archive else None,
        "outputs": manifest.outputs() if manifest is not None else [],
        "deliverables": [{"preset": d.preset, "path": d.path, "format": d.format, "size": d.size, "label": d.label}
                         for d in (deliver.deliveries if deliver is not None else ())],
        "reasons": manifest.attention() if manifest is not None else [],
        "error": error,
    }


class Sender:
    """The outbox's calls to one webhook, sent from a thread of its own."""

    def __init__(self, hook: Callable[[], WebhookConfig | None], url: str, journal: Journal,
                 stop: threading.Event):
        self.hook, self.url, self.journal, self.stop = hook, url, journal, stop
        self.thread = threading.Thread(target=self._loop, name=f"webhook-{redact(url)[:40]}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            hook = self.hook()
            if hook is None:  # no longer configured: its calls wait for it to come back
                self.stop.wait(5.0)
                continue
            try:
                rows = self.journal.due(self.url, time.time())
                for row in rows:
                    if self.stop.is_set():
                        break
                    self._send(hook, row)
            except Exception:  # the sender outlives any one odd call
                log.exception("webhook sender error; carrying on", url=redact(self.url))
                rows = []
            self.stop.wait(0.5 if rows else 1.0)

    def _send(self, hook: WebhookConfig, row) -> None:
        body = row["body"].encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "polishd", "X-Polishd-Event": row["event"],
            "X-Polishd-Delivery": row["id"], "X-Polishd-Signature": signature(hook.secret, body)})
        try:
            with _OPENER.open(request, timeout=hook.timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # refused, timed out, unreachable, a bad answer
            status, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = f"HTTP {status}"
        if status is not None and 200 <= status < 300:
            self.journal.outbox_sent(row["id"])
            log.info("webhook called", url=redact(self.url), kind=row["event"], call=row["id"],
                     attempts=row["attempts"] + 1)
            return
        now = time.time()
        delay = min(BACKOFF_LONGEST, BACKOFF_FIRST * 2 ** row["attempts"])
        give_up = now - row["created"] + delay > hook.give_up
        self.journal.outbox_failed(row["id"], error, None if give_up else now + delay)
        (log.error if give_up else log.warning)(
            "webhook call given up" if give_up else "webhook call failed; tried again later", url=redact(self.url),
            kind=row["event"], call=row["id"], attempts=row["attempts"] + 1, error=error,
            **({} if give_up else {"next_try_s": round(delay)}))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx is the answer: a call is not sent on to where a receiver points


_OPENER = urllib.request.build_opener(_NoRedirects())


def send_once(cfg: Config, journal: Journal, jobs: set[int]) -> None:
    """One try of the calls due now that tell of ``jobs`` (``polishd process`` at its end: its own, not a
    running daemon's); what does not take waits in the outbox for ``polishd run``."""
    stop = threading.Event()
    for hook in cfg.notify.webhook:
        sender = Sender(lambda hook=hook: hook, hook.url, journal, stop)
        for row in journal.due(hook.url, time.time(), limit=10_000):
            if json.loads(row["body"]).get("job") in jobs:
                sender._send(hook, row)


def start(config: Callable[[], Config], journal: Journal, stop: threading.Event) -> list[Sender]:
    """One sender a configured webhook (a reload that adds one applies at the next start)."""

    def hook_of(url: str) -> Callable[[], WebhookConfig | None]:
        return lambda: next((h for h in config().notify.webhook if h.url == url), None)

    senders = [Sender(hook_of(h.url), h.url, journal, stop) for h in config().notify.webhook]
    for s in senders:
        s.start()
    return senders
