"""Word back over webhooks: a real HTTP receiver on a loopback port, a real daemon process, kill -9 between tries."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.kit.redis_server import free_port
from daemon import config as config_mod
from tests.conftest import REPO, png_bytes, write_config
from tests.test_daemon import Polishd, wait_until

SECRET = "webhook-secret-0123456789"


class Receiver:
    """A receiver that checks each call's signature, fails the first ``fail`` tries of each delivery id (500),
    and records the ids it took (2xx).  ``hang``: it never answers."""

    def __init__(self, fail: int = 0, hang: bool = False, redirect: str | None = None):
        self.fail, self.hang, self.redirect = fail, hang, redirect
        self.tries: dict[str, int] = {}
        self.taken: list[dict] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Polishd-Signature", ""), expected):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.hang:
                    time.sleep(30)
                    return
                call = self.headers["X-Polishd-Delivery"]
                with receiver.lock:
                    receiver.tries[call] = receiver.tries.get(call, 0) + 1
                    ok = receiver.tries[call] > receiver.fail
                    if ok:
                        receiver.taken.append(json.loads(body))
                if receiver.redirect:
                    self.send_response(302)
                    self.send_header("Location", receiver.redirect)
                else:
                    self.send_response(204 if ok else 500)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _config(tmp_path, receiver: Receiver, extra: str = "") -> None:
    write_config(tmp_path, f'[[notify.webhook]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n{extra}')


@pytest.mark.slow
def test_a_receiver_that_fails_twice_gets_each_event_exactly_once_across_a_kill_9(tmp_path):
    receiver = Receiver(fail=2)
    _config(tmp_path, receiver)
    d = Polishd(tmp_path).start()
    try:
        (tmp_path / "inbox" / "a.png").write_bytes(png_bytes(seed=61))
        (tmp_path / "inbox" / "bad.png").write_bytes(b"not an image")
        wait_until(lambda: len(receiver.tries) == 2, 30, "the first try of both events")
        d.kill9()  # between the first and the second try
        d = Polishd(tmp_path).start()
        wait_until(lambda: len(receiver.taken) == 2, 60, "both events taken")
        time.sleep(2)
        assert d.stop() == 0
    finally:
        receiver.close()
    assert receiver.bad_signatures == 0
    assert sorted(receiver.tries.values()) == [3, 3]  # two refused tries each, then the one taken
    by_event = {b["event"]: b for b in receiver.taken}
    assert set(by_event) == {"done", "failed"} and len({b["id"] for b in receiver.taken}) == 2
    assert by_event["done"]["image"] == "a.png" and by_event["done"]["archive"].startswith("a-")
    assert by_event["done"]["api"] == f"/api/jobs/{by_event['done']['job']}" and by_event["done"]["outputs"]
    assert "not a PNG, JPEG or WebP" in by_event["failed"]["error"]


def test_a_receiver_that_never_answers_does_not_slow_the_pipeline_and_status_says_it_fails(tmp_path):
    receiver = Receiver(hang=True)
    _config(tmp_path, receiver, "timeout = 2.0\n")
    d = Polishd(tmp_path).start()
    try:
        for i in range(6):
            (tmp_path / "inbox" / f"{i}.png").write_bytes(png_bytes(seed=70 + i))
        t0 = time.monotonic()
        wait_until(lambda: d.done() == 6, 30, "all six done")
        assert time.monotonic() - t0 < 8  # a sender waiting on the receiver would need 6 × 2 s more
        wait_until(lambda: "webhook call failed; tried again later" in d.events(), 20, "a failed call")
        status = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(tmp_path / "pipeline.toml"),
                                 "status"], cwd=REPO, capture_output=True, text=True, timeout=60,
                                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        line = next(x for x in status.stdout.splitlines() if x.startswith("webhook "))
        assert line.startswith(f"webhook {receiver.url}: 0 delivered in 24 h, ") and "failing (" in line, line
        assert "timed out" in line or "TimeoutError" in line, line
    finally:
        d.stop()
        receiver.close()


def test_a_redirect_is_not_followed_and_counts_as_a_failed_call(tmp_path):
    from daemon.journal import Journal
    from daemon.webhooks import Sender, calls

    elsewhere = Receiver()
    receiver = Receiver(redirect=elsewhere.url)
    _config(tmp_path, receiver)
    cfg = config_mod.load(tmp_path / "pipeline.toml")
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    with journal._tx() as db:
        journal._post(db, calls(cfg, ["done"], {"job": 1, "image": "a.png"}))
    stop = threading.Event()
    Sender(lambda: cfg.notify.webhook[0], receiver.url, journal, stop).start()
    try:
        wait_until(lambda: journal.outbox_counts(0)[receiver.url]["failing"] == 1, 10, "the call refused")
        assert journal.outbox_counts(0)[receiver.url]["last_error"] == "HTTP 302"
        assert elsewhere.tries == {}
    finally:
        stop.set()
        receiver.close()
        elsewhere.close()
        journal.close()


def test_a_webhook_must_be_http_with_a_secret_and_without_credentials_in_its_url():
    for url in ("file:///etc/passwd", "gopher://x/", "http://user:pw@example.com/hook", "javascript:alert(1)"):
        with pytest.raises(config_mod.ConfigError, match=r"\[notify.webhook.1\].url must be an http"):
            config_mod.parse(f'[[notify.webhook]]\nurl = "{url}"\nsecret = "{SECRET}"\n')
    with pytest.raises(config_mod.ConfigError, match="secret must be at least 16"):
        config_mod.parse('[[notify.webhook]]\nurl = "https://example.com/hook"\nsecret = "short"\n')
    with pytest.raises(config_mod.ConfigError, match=r"\[notify\] cannot be set per image"):
        config_mod.with_overrides(config_mod.parse(""), {"notify": {"webhook": []}}, "x.toml")


def test_process_tells_the_webhooks_of_its_own_images_as_it_ends(tmp_path):
    receiver = Receiver()
    _config(tmp_path, receiver)
    src = tmp_path / "one.png"
    src.write_bytes(png_bytes(seed=81))
    try:
        out = subprocess.run([sys.executable, "-m", "tests.helpers.run_polishd", "--", "--config",
                              str(tmp_path / "pipeline.toml"), "process", str(src)], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert [(b["event"], b["image"]) for b in receiver.taken] == [("done", "one.png")]
        assert receiver.bad_signatures == 0
    finally:
        receiver.close()
