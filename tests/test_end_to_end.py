"""The main job, as `make demo` runs it: real models, real CLI, the demo config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import DATA, REPO, manifest_of


@pytest.mark.slow
def test_demo_pipeline_on_the_astronaut(tmp_path):
    config = tmp_path / "demo.toml"
    text = (REPO / "examples" / "demo.toml").read_text().replace("../var/demo/", "").replace(
        '"../var/models"', f'"{REPO / "var" / "models"}"')
    config.write_text(text)
    shutil.copytree(REPO / "examples" / "brand", tmp_path / "brand")  # the logo and the grade the presets use
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DATA / "astronaut.png", src / "astronaut.png")
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), "--log-format", "json",
                          "process", str(src)], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    (archive,) = (tmp_path / "archive").iterdir()
    manifest = manifest_of(archive)
    assert manifest.status == "done"
    assert [(s.name, s.status) for s in manifest.stages] == [
        ("automask", "done"), ("inpaint", "skipped"), ("outpaint", "done"), ("upscale", "done"), ("deliver", "done"),
        ("contact", "done")]
    assert "no inpainting model configured" in manifest.stages[1].reason
    assert Image.open(archive / "40-upscale.png").size == (1024, 1024)
    assert Image.open(archive / "30-outpaint-16x9.png").size == (1024, 576)
    assert Image.open(archive / "30-outpaint-4x5.png").size == (512, 640)
    assert Image.open(archive / "10-mask-face.png").size == (512, 512)
    assert (archive / "99-contact.jpg").exists()
    assert (archive / "00-original.png").read_bytes() == (DATA / "astronaut.png").read_bytes()
    delivered = {p.name: Image.open(p).size for p in (tmp_path / "outbox" / archive.name).iterdir()}
    # The feed and banner come from variants the infill alone made: held until a reviewer approves them.
    assert delivered == {"astronaut-master.png": (1024, 1024), "astronaut-story.jpg": (1080, 1920)}
    assert sorted(h.preset for h in manifest.stage("deliver").details.held) == ["banner", "feed"]
    assert [a.split(":")[:2] for a in manifest.attention()] == [["outpaint", " 16x9"], ["outpaint", " 4x5"]]
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    finished = [r for r in lines if r.get("event") == "job finished"]
    assert finished and set(finished[0]["stages"]) == {"automask", "outpaint", "upscale", "deliver", "contact"}
    assert all("image" in r for r in lines if r.get("event") == "stage completed")
