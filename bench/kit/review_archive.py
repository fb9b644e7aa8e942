"""A small real archive for the review page: images through the real runner (detection, two infill variants,
delivery), one of them carrying an A1111 prompt with markup in it, and one failure."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, PngImagePlugin

from bench.kit.pipeline import DATA, write_config
from daemon import config as config_mod
from daemon.journal import Journal
from daemon.pipeline import default_stages
from daemon.runner import Runner

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


# The upscale stage with an A/B candidate: the small model as the main one, the anime RRDB beside it.
COMPARE = """
[upscale]
enabled = true
model = "animevideov3"
compare = ["x4plus-anime"]
scale = 2
backend = "torch"
tile = 128
apply_to = ["master"]
"""


def make_archive(root: Path, extra: str = "", count: int = 3, variants: bool = True):
    """(config, {name: archive id}) for ``count`` finished images plus one failed file.  Without ``variants``
    nothing is outpainted (and so nothing is flagged for being the infill alone)."""
    base = PIPELINE if "[upscale]" not in extra else PIPELINE.replace("[upscale]\nenabled = false\n", "")
    if not variants:
        base = base.replace('variants = ["16:9", "4:5"]\nmax_step = 1.0\n', "enabled = false\n")
    cfg = config_mod.load(write_config(root, base + extra))
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    runner = Runner(journal, lambda: cfg, default_stages())
    ids = {}
    for i in range(count):
        name = "prompted.png" if i == 0 else f"photo-{i}.png"
        path = cfg.paths.inbox / name
        size = 128 if "compare" in extra else 256  # the A/B archive runs two upscalers: a small picture
        image = Image.open(DATA / "astronaut.png").convert("RGB").resize((size, size)).rotate(i * 7)
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
