"""A small real archive for the review page: images through the real runner (detection, two infill variants,
delivery), one of them carrying an A1111 prompt with markup in it, and one failure."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, PngImagePlugin

from daemon import config as config_mod
from daemon.journal import Journal
from daemon.pipeline import default_stages
from daemon.runner import Runner
from tests.conftest import DATA, write_config

PIPELINE = """
[outpaint]
variants = ["16:9", "4:5"]
max_step = 1.0
[upscale]
enabled = false
[contact]
enabled = false
"""
HOSTILE_PROMPT = 'a cat <script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2">'


def make_archive(root: Path, extra: str = "", count: int = 3):
    """(config, {name: archive id}) for ``count`` finished images plus one failed file."""
    cfg = config_mod.load(write_config(root, PIPELINE + extra))
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    runner = Runner(journal, lambda: cfg, default_stages())
    ids = {}
    for i in range(count):
        name = "prompted.png" if i == 0 else f"photo-{i}.png"
        path = cfg.paths.inbox / name
        image = Image.open(DATA / "astronaut.png").convert("RGB").resize((256, 256)).rotate(i * 7)
        info = PngImagePlugin.PngInfo()
        if i == 0:
            info.add_text("parameters", f"{HOSTILE_PROMPT}\nNegative prompt: blurry\nSteps: 20, Model: dreamshaper")
        image.save(path, pnginfo=info)
        data = path.read_bytes()
        journal.enqueue(path, hashlib.sha256(data).hexdigest(), len(data), path.stat().st_mtime)
        out = runner.run_job(journal.claim())
        assert out.status == "done", out.error
        ids[name] = out.archive.name
    bad = cfg.paths.inbox / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    journal.enqueue(bad, hashlib.sha256(bad.read_bytes()).hexdigest(), bad.stat().st_size, bad.stat().st_mtime)
    runner.run_job(journal.claim())
    for stage in runner.stages:
        stage.close()
    journal.close()
    return cfg, ids
