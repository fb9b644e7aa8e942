"""The manifest as a typed, versioned record: every manifest written since the first release reads, what it says
is reached through the model, and writing it back loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.archive import (
    MANIFEST_VERSION,
    ArchiveFolder,
    ImageStatus,
    Manifest,
    ManifestError,
    SourceRecord,
    StageEntry,
)
from stages.base import StageStatus
from stages.records import DeliverDetails, Gate, InpaintDetails

FIXTURES = Path(__file__).parent / "data" / "manifests"


def _read(name: str) -> Manifest:
    return Manifest.from_json(json.loads((FIXTURES / name).read_text()), name)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_kept_manifest_reads_and_writes_back_without_loss(name):
    raw = json.loads((FIXTURES / name).read_text())
    manifest = _read(name)
    assert manifest.version == MANIFEST_VERSION and manifest.status == ImageStatus.DONE
    assert [s.name for s in manifest.stages] == [s["name"] for s in raw["stages"]]
    again = json.loads(manifest.to_json())
    assert Manifest.from_json(again) == manifest
    for before, after in zip(raw["stages"], again["stages"], strict=True):  # every key kept, as people read it
        assert set(before) - {"products"} <= set(after)
        assert after["params"] == before["params"] and after["outputs"] == before["outputs"]
        if isinstance(before.get("details"), dict):
            assert set(before["details"]) <= set(after["details"])


def test_an_inpaint_record_is_typed_down_to_its_gate_tries_and_its_crops():
    manifest = _read("v1-inpaint-gate-alternative-deliver.json")
    inpaint = manifest.details("inpaint")
    assert isinstance(inpaint, InpaintDetails)
    (region,) = inpaint.regions
    assert region.gate == Gate.FAILED and region.failed_gate and len(region.tries) == 2
    assert region.tries[0].scores["face_before"] > region.tries[0].scores["face_after"]
    # version 1 named the crops only by file name: the reader finds them, nobody else parses names
    assert (region.before, region.after) == ("20-face-0-before.png", "20-face-0-after.png")
    assert manifest.regions() == [region]
    (alternative,) = inpaint.alternatives
    assert alternative.label == "gentle" and alternative.regions[0].steps == 3
    assert [(s, [c.choice for c in cs]) for s, cs in manifest.comparisons()] == [("inpaint", ["main", "gentle"])]
    deliver = manifest.details("deliver")
    assert isinstance(deliver, DeliverDetails) and [d.preset for d in deliver.deliveries] == ["master", "banner"]
    assert manifest.attention() and manifest.attention()[0].startswith("inpaint: face 0")


def test_an_upscale_comparison_comes_from_the_typed_products():
    manifest = _read("v1-upscale-compare.json")
    ((stage, candidates),) = manifest.comparisons()
    assert stage == "upscale"
    assert [(c.choice, c.picture) for c in candidates] == [("animevideov3", "40-upscale.png"),
                                                           ("x4plus-anime", "40-upscale@x4plus-anime.png")]
    assert manifest.master() == "40-upscale.png"


def test_a_manifest_from_before_the_typed_hand_offs_gives_its_pictures_by_role():
    manifest = _read("v1-2026-11-24-before-inputs-hash.json")
    products = manifest.products()
    assert products.detections.picture.name == "10-detections.png"
    assert [(u.source, u.picture.name) for u in products.upscaled] == [("master", "40-upscale.png")]
    assert manifest.stage("automask").inputs_sha256 == ""  # never reused: its stages run again on a retry
    assert "00-original.png" in manifest.listed() and "40-upscale.png" in manifest.listed()


@pytest.mark.parametrize("data, why", [
    ([], "expected a table"),
    ({"id": "x", "source": {"name": "a.png", "sha256": "0" * 64}, "config_sha256": "", "version": 99},
     "newer than this polishd reads"),
    ({"id": "x", "source": {"name": "a.png", "sha256": "0" * 64}, "config_sha256": "",
      "stages": [{"name": "inpaint", "status": "exploded"}]}, "stages[0].status"),
    ({"id": "x", "source": "a.png", "config_sha256": ""}, "source"),
])
def test_a_manifest_of_the_wrong_shape_is_refused_naming_what_does_not_fit(data, why):
    with pytest.raises(ManifestError, match=r"m\.json: .*" + why.replace("[", r"\[").replace("]", r"\]")):
        Manifest.from_json(data, "m.json")


def test_the_folder_reads_and_writes_the_model(tmp_path):
    folder = ArchiveFolder(tmp_path)
    assert folder.read_manifest() is None
    m = Manifest("a-12345678", SourceRecord("a.png", "1" * 64, 10, "jpeg"), "c" * 64)
    m.put_stage(StageEntry("upscale", StageStatus.SKIPPED, reason="disabled"))
    folder.write_manifest(m)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["version"] == MANIFEST_VERSION and on_disk["stages"][0]["status"] == "skipped"
    assert "duplicates" not in on_disk and on_disk["finished"] is None  # optional keys only when they say something
    assert folder.read_manifest() == m and m.original == "00-original.jpg"
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        folder.read_manifest()
