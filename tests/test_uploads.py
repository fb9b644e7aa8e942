"""Sending files over HTTP: POST /api/jobs and GET /api/jobs/<id> on a real `polishd serve` on a loopback port,
processed by a real `polishd run`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.kit.serve import start_serve
from daemon import config as config_mod
from daemon.journal import Journal
from tests.conftest import DATA, REPO, png_bytes, write_config
from tests.test_daemon import wait_until

TOKEN = "upload-token-0123456789abcdef"


@pytest.fixture
def served(tmp_path):
    config = write_config(tmp_path, f'[review]\ntoken = "{TOKEN}"\n[outpaint]\nenabled = false\n'
                                    '[upscale]\nenabled = false\n[contact]\nenabled = false\n')
    (tmp_path / "state").mkdir(exist_ok=True)
    Journal(tmp_path / "state" / "journal.sqlite3").close()
    proc, url = start_serve(config, tmp_path / "serve.log")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield config_mod.load(config), client
    proc.terminate()
    proc.wait(10)


def _photo() -> bytes:
    buf = io.BytesIO()
    Image.open(DATA / "astronaut.png").convert("RGB").resize((256, 256)).save(buf, "PNG")
    return buf.getvalue()


def _left_behind(cfg) -> list[str]:
    uploads = cfg.paths.state / "uploads"
    return sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*")) if uploads.exists() else []


def test_an_upload_is_checked_queued_processed_and_its_outputs_and_deliverables_are_given_by_url(served, tmp_path):
    cfg, client = served
    sent = client.post("/api/jobs", files={"file": ("hero shot.png", _photo(), "image/png")},
                       data={"settings": '[deliver]\ninput = "photo"\n'})
    assert sent.status_code == 201, sent.text
    job = sent.json()
    assert job["state"] == "queued" and job["archive"].startswith("hero_shot-") and sent.headers["location"] == \
        f"/api/jobs/{job['job']}"
    assert client.get(job["url"]).json()["state"] == "queued"
    daemon = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(cfg.source), "run"], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: client.get(job["url"]).json()["state"] == "done", 120, "the upload processed")
    finally:
        daemon.terminate()
        daemon.wait(30)
    done = client.get(job["url"]).json()
    assert done["archive"] == job["archive"] and done["page"] == f"/images/{job['archive']}"
    names = [o["name"] for o in done["outputs"]]
    assert "10-detections.png" in names and "50-deliver.json" in names
    assert client.get(done["outputs"][names.index("10-detections.png")]["url"]).status_code == 200
    (master,) = done["deliverables"]
    assert master["preset"] == "master" and client.get(master["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    archived = cfg.paths.archive / job["archive"]
    assert (archived / "00-original.png").read_bytes() == _photo()
    assert (archived / "00-sidecar.toml").read_text() == '[deliver]\ninput = "photo"\n'
    assert _left_behind(cfg) == []  # the upload's own folder went with it


def test_bad_uploads_get_the_right_status_and_leave_nothing_behind(served, tmp_path):
    cfg, client = served
    url = str(client.base_url)

    def post(name: str, body: bytes, **kw) -> int:
        return client.post("/api/jobs", files={"file": (name, body, "application/octet-stream")}, **kw).status_code

    assert post("notes.png", b"these are words, not a picture") == 415
    assert post("fake.jpg", b"GIF89a" + bytes(64)) == 415
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 megapixels in a few kilobytes
    assert len(bomb.getvalue()) < 100_000 and post("bomb.png", bomb.getvalue()) == 422
    assert post("../escape.png", png_bytes()) == 400
    assert post("..", png_bytes()) == 400
    assert post("bad-settings.png", png_bytes(), data={"settings": "[upscale]\nscale = 99\n"}) == 422
    assert post("outside.png", png_bytes(), data={"settings": '[deliver]\n[[deliver.preset]]\nname = "x"\n'
                                                              'lut = "/etc/shadow"\n'}) == 422
    import socket

    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # says 522 MB, sends 64 bytes
        s.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Type: multipart/form-data; boundary=b\r\n"
                  f"Content-Length: {cfg.daemon.max_bytes + 10 ** 7}\r\n\r\n".encode() + b"x" * 64)
        assert s.recv(100)[9:12] == b"413"  # refused by its length, before it is read
    assert client.post("/api/jobs", content=b"--b--\r\n", headers={
        "Content-Type": "multipart/form-data; boundary=b"}).status_code == 400  # no file field
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        assert anonymous.post("/api/jobs", files={"file": ("a.png", png_bytes())}).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token-at-all-0000"}
        assert anonymous.post("/api/jobs", files={"file": ("a.png", png_bytes())}, headers=wrong).status_code == 401
    assert _left_behind(cfg) == []
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    assert journal.jobs() == []
    journal.close()
    assert client.get("/api/jobs/999").status_code == 404


def test_without_a_token_the_server_takes_no_upload(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir(exist_ok=True)
    Journal(tmp_path / "state" / "journal.sqlite3").close()
    proc, url = start_serve(config, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/")
            csrf = client.cookies.get("polishd_csrf")
            sent = client.post("/api/jobs", files={"file": ("a.png", png_bytes())}, headers={"X-CSRF-Token": csrf})
            assert sent.status_code == 403 and "[review].token" in sent.json()["error"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert not (tmp_path / "state" / "uploads").exists()
    assert Path(tmp_path / "inbox").exists()


def test_uploads_waiting_in_the_queue_are_bounded(tmp_path):
    from starlette.testclient import TestClient

    from daemon.review.app import create_app

    cfg = config_mod.load(write_config(tmp_path, f'[review]\ntoken = "{TOKEN}"\nuploads_queued = 2\n'))
    client = TestClient(create_app(cfg), base_url="http://127.0.0.1:8750",
                        headers={"Authorization": f"Bearer {TOKEN}"})
    codes = [client.post("/api/jobs", files={"file": (f"{i}.png", png_bytes(seed=i))}).status_code for i in range(3)]
    assert codes == [201, 201, 429]
    assert len(list((cfg.paths.state / "uploads").iterdir())) == 2
