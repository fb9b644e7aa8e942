"""Delivery on the demo: the sample images through examples/demo.toml's presets, signed with a throwaway
C2PA chain; the outbox listing, the time of the deliver stage, the presets side by side as a picture, and what
exiftool and c2pa-python's reader say of one delivered file.

    python -m bench.deliver

Writes bench/out/deliver.md and bench/out/deliver.png.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from bench.kit.c2pa_chain import make_chain
from bench.kit.pipeline import manifest_of
from bench.upscale_cpu import cpu
from daemon.cli import main as polishd

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
ORDER = ["master", "feed", "banner", "story"]


def side_by_side(files: list[Path], path: Path, height: int = 420) -> None:
    tiles = []
    for f in files:
        with Image.open(f) as im:
            tile = im.convert("RGB")
            size = im.size
        tile.thumbnail((height * 2, height), Image.Resampling.LANCZOS)
        tiles.append((tile, f"{f.name}  {size[0]}x{size[1]}"))
    pad, label = 12, 22
    sheet = Image.new("RGB", (sum(t.width for t, _ in tiles) + pad * (len(tiles) + 1), height + label + 2 * pad),
                      (30, 30, 30))
    d, x = ImageDraw.Draw(sheet), pad
    for tile, text in tiles:
        sheet.paste(tile, (x, pad + (height - tile.height) // 2))
        d.text((x, height + pad + 4), text, fill=(230, 230, 230))
        x += tile.width + pad
    sheet.save(path)


def main(argv=None) -> int:
    with tempfile.TemporaryDirectory(prefix="polishd-deliver-") as tmp:
        root = Path(tmp)
        chain, key, _ = make_chain(root / "keys")
        shutil.copytree(REPO / "examples" / "brand", root / "brand")
        text = (REPO / "examples" / "demo.toml").read_text()
        text = text.replace('"../var/demo/', '"').replace('models = "../var/models"', f'models = "{REPO}/var/models"')
        text += f'\n[deliver.c2pa]\ncertificate = "{chain}"\nprivate_key = "{key}"\n'
        (root / "demo.toml").write_text(text)
        code = polishd(["--config", str(root / "demo.toml"), "--log-level", "warning", "--log-format", "json",
                        "process", "--no-progress", str(REPO / "examples" / "inbox")])
        if code != 0:
            return code
        lines = ["# Delivery on the demo", "", "`python -m bench.deliver`: both sample images through "
                 "examples/demo.toml (its four presets), signed with a throwaway ES256 chain.", "",
                 f"Machine: {cpu()[0]}, {os.cpu_count()} cores.", "", "## The outbox", "", "```"]
        outbox = root / "outbox"
        files = sorted(p for p in outbox.rglob("*") if p.is_file())
        for p in files:
            with Image.open(p) as im:
                lines.append(f"{str(p.relative_to(root)):60s} {im.size[0]:>5}x{im.size[1]:<5} {p.stat().st_size:>9,} B")
        lines += ["```", "", "| image | deliver stage, s | delivered | failed |", "|---|---|---|---|"]
        for folder in sorted(p.parent for p in (root / "archive").glob("*/manifest.json")):
            entry = manifest_of(folder).stage("deliver")
            lines.append(f"| {folder.name} | {entry.duration_s:.2f} | "
                         f"{len(entry.details.deliveries)} | {len(entry.details.failed)} |")
        astronaut = sorted((p for p in files if p.parent.name.startswith("astronaut")),
                           key=lambda p: ORDER.index(p.stem.rsplit("-", 1)[1]))
        OUT.mkdir(parents=True, exist_ok=True)
        side_by_side(astronaut, OUT / "deliver.png")
        feed = next(p for p in astronaut if p.stem.endswith("-feed"))
        exiftool = shutil.which("exiftool")
        if exiftool:
            tags = subprocess.run([exiftool, "-G1", "-XMP:all", "-ICC_Profile:ProfileDescription", str(feed)],
                                  capture_output=True, text=True).stdout
            lines += ["", f"## exiftool on {feed.name}", "", "```", tags.rstrip(), "```"]
        import c2pa

        with c2pa.Reader("image/jpeg", io.BytesIO(feed.read_bytes())) as reader:
            state = reader.get_validation_state()
            active = reader.get_active_manifest()
        actions = [a for s in active["assertions"] if s["label"].startswith("c2pa.actions")
                   for a in s["data"]["actions"]]
        lines += ["", f"## c2pa-python's reader on {feed.name}", "", f"validation state: **{state}** (the throwaway "
                  "root is not on a trust list, so not `Trusted`)", "", "```"]
        lines += [f"{a['action']:24s} {json.dumps({k: v for k, v in a.items() if k != 'action'})[:150]}"
                  for a in actions]
        lines += [f"ingredient: {i['title']} ({i['relationship']})" for i in active.get("ingredients", [])]
        lines += ["```", ""]
    (OUT / "deliver.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
