"""A 6000×4000 photo through auto-mask and outpaint: peak memory, time, files, and what detection finds.

The photo is made from tests/data/astronaut.png (one face, no hands), enlarged with Lanczos to
6000×4000 — a large image must not invent faces.  Each run is a fresh process through the real runner
with the shipped pipeline.toml defaults for those two stages (variants 16:9, 9:16, 4:5; blur infill;
no generative model); peak RSS is the kernel's high-water mark (VmHWM).

    python -m bench.big_image          # → bench/out/big_image.md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.kit.pipeline import manifest_of

OUT = Path(__file__).parent / "out"
REPO = Path(__file__).parent.parent

CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path
from daemon import config as config_mod
from daemon.journal import Journal
from daemon.runner import Runner
from stages.automask import AutoMaskStage
from stages.outpaint import OutpaintStage
root = Path(sys.argv[1])
cfg = config_mod.load(root / "pipeline.toml")
src = root / "inbox" / "big.jpg"
journal = Journal(cfg.paths.state / "j.sqlite3")
data = src.read_bytes()
journal.enqueue(src, hashlib.sha256(data).hexdigest(), len(data), src.stat().st_mtime)
t = time.monotonic()
out = Runner(journal, lambda: cfg, [AutoMaskStage(), OutpaintStage()]).run_job(journal.claim())
seconds = time.monotonic() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"status": str(out.status), "seconds": seconds, "peak_mb": hwm / 1024,
                  "archive": str(out.archive)}))
"""


def make_photo(path: Path) -> None:
    from PIL import Image

    small = Image.open(REPO / "tests" / "data" / "astronaut.png").convert("RGB").crop((0, 85, 512, 427))
    small.resize((6000, 4000), Image.Resampling.LANCZOS).save(path, quality=92)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("inbox", "archive", "failed", "state"):
            (root / sub).mkdir()
        (root / "pipeline.toml").write_text(
            f'[paths]\ninbox = "inbox"\narchive = "archive"\nfailed = "failed"\nstate = "state"\n'
            f'models = "{REPO / "var" / "models"}"\n[log]\nlevel = "warning"\n')
        make_photo(root / "inbox" / "big.jpg")
        run = subprocess.run([sys.executable, "-c", CHILD, str(root)], cwd=REPO, capture_output=True, text=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        archive = Path(result["archive"])
        automask = manifest_of(archive).stage("automask")
        files = sorted((p.name, p.stat().st_size) for p in archive.iterdir())
    found = automask.details.counts
    lines = ["# A 6000×4000 photo through auto-mask and outpaint", "", "`python -m bench.big_image`", "",
             f"- status: {result['status']}, {result['seconds']:.1f} s",
             f"- peak memory (VmHWM): **{result['peak_mb']:.0f} MB**",
             f"- detections: {found['face']} face(s), {found['hand']} hand(s) (the photo holds 1 face, 0 hands)",
             "", "| file | MB |", "|---|---|"]
    lines += [f"| {name} | {size / 1e6:.1f} |" for name, size in files]
    OUT.mkdir(exist_ok=True)
    (OUT / "big_image.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
