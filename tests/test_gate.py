"""The quality gate on every repaint: its measures, and each branch through the inpaint stage on the tiny
pipeline (whose random pixels no detector can judge: there the detectors' scores are stubbed)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from daemon import config as config_mod
from daemon.journal import Journal
from daemon.ops import journal_path
from daemon.runner import Runner
from stages import gate
from stages.automask import AutoMaskStage
from stages.inpaint import InpaintStage
from tests.conftest import DATA, manifest_of, write_config

# Sharma, Wu and Dalal's test pairs for CIEDE2000 (pairs 1, 7, 19 and 33 of their table)
SHARMA = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
          ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
          ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
          ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082)]


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA)
def test_delta_e_2000_matches_the_published_test_data(lab1, lab2, expected):
    assert gate.delta_e_2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)
    assert gate.delta_e_2000(lab2, lab1) == pytest.approx(expected, abs=1e-4)


def test_the_colour_check_sees_a_tinted_patch_and_not_new_detail():
    rng = np.random.default_rng(0)
    before = np.full((64, 64, 3), (150, 120, 100), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    mask[12:16, 12:52] = mask[48:52, 12:52] = mask[12:52, 12:16] = mask[12:52, 48:52] = 128  # a feather
    detail = np.clip(before + rng.normal(0, 12, before.shape), 0, 255).astype(np.uint8)  # texture, same colour
    tinted = np.clip(before.astype(int) + (30, 0, -20), 0, 255).astype(np.uint8)
    assert gate.ring_delta_e(before, detail, mask) < 2.0
    assert gate.ring_delta_e(before, tinted, mask) > gate.GateConfig().max_delta_e


def _hand(spread: float) -> list[tuple[float, float]]:
    """21 landmarks of an upright hand: wrist at the bottom, fingers fanned by ``spread`` (0 = a fist's blob)."""
    pts = [(0.0, 0.0)] * 21
    pts[0] = (0.0, 0.0)
    for f, angle in enumerate((-60, -25, 0, 20, 40)):
        a = np.radians(angle * spread)
        base = (np.sin(a) * 0.5, -0.8 if f else -0.3)
        for j in range(4):
            r = (0.3 + 0.25 * j) * spread + 0.05
            pts[1 + 4 * f + j] = (base[0] + np.sin(a) * r, base[1] - np.cos(a) * r)
    return [(x * 100 + 200, y * 100 + 300) for x, y in pts]


def test_five_fingers_apart_and_a_blob():
    assert gate.fingers_apart(_hand(1.0))
    assert not gate.fingers_apart(_hand(0.05))
    assert not gate.fingers_apart(_hand(1.0)[:20])


def test_the_real_face_detector_judges_a_face_and_noise():
    judge = gate.Judge()
    try:
        face = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))[0:300, 100:400]
        assert judge.face_score(face, (77, 82, 172, 177)) > 0.8
        assert judge.face_score(face, (0, 250, 40, 300)) == 0.0  # the face is not in that region
    finally:
        judge.close()


# --------------------------------------------------------------------------- the gate in the stage


class Scripted(gate.Judge):
    """Scores in the order the gate asks for them: before, after, before, after, …"""

    def __init__(self, faces=(), hands=()):
        super().__init__()
        self.faces, self.hands = list(faces), list(hands)
        self.asked = 0

    def face_score(self, crop, box, finder=None):
        self.asked += 1
        return self.faces.pop(0)

    def hand(self, crop, box, finder=None):
        self.asked += 1
        return self.hands.pop(0)


def _run(tmp_path, tiny_sd, judge: gate.Judge, gate_table: str = "", image=DATA / "astronaut.png"):
    extra = (f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n[inpaint.gate]\n{gate_table}\n'
             "[automask.hand]\nenabled = false\n[upscale]\nenabled = false\n")
    cfg = config_mod.load(write_config(tmp_path, extra))
    src = cfg.paths.inbox / image.name
    src.write_bytes(image.read_bytes())
    journal = Journal(journal_path(cfg))
    journal.enqueue(src, hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_size, src.stat().st_mtime)
    inpaint = InpaintStage()
    inpaint.judge = judge
    out = Runner(journal, lambda: cfg, [AutoMaskStage(), inpaint]).run_job(journal.claim())
    assert out.status == "done", out.error
    entry = manifest_of(out.archive).stage("inpaint")
    return cfg, journal, out.archive, entry


def test_a_region_that_passes_is_kept_at_the_first_try(tmp_path, tiny_sd):
    cfg, journal, archive, entry = _run(tmp_path, tiny_sd, Scripted(faces=[0.92, 0.9]), "max_delta_e = 50")
    (region,) = entry.details.regions
    assert region.gate == "passed" and len(region.tries) == 1
    assert region.tries[0].scores["face_before"] == 0.92 and region.tries[0].scores["face_after"] == 0.9
    assert entry.attention == [] and journal.needing_review()[1] == 0
    assert not np.array_equal(np.asarray(Image.open(archive / "20-inpaint.png").convert("RGB")),
                              np.asarray(Image.open(DATA / "astronaut.png").convert("RGB")))


def test_a_failed_try_is_painted_again_with_a_new_seed_and_less_strength(tmp_path, tiny_sd):
    judge = Scripted(faces=[0.92, 0.3, 0.92, 0.88])
    _, _, _, entry = _run(tmp_path, tiny_sd, judge, "max_delta_e = 50")
    (region,) = entry.details.regions
    first, second = region.tries
    assert not first.passed and "face score 0.30 after, 0.92 before" in first.why
    assert second.passed and second.seed == first.seed + 1000
    assert second.strength == pytest.approx(first.strength * 0.75, abs=1e-3)
    assert region.gate == "passed" and region.strength == second.strength and judge.asked == 4
    assert "gate: 1 of 1 passed (1 retries)" in entry.reason


def test_when_every_try_fails_the_original_stays_and_the_image_needs_review(tmp_path, tiny_sd, capsys):
    from daemon.cli import _status

    cfg, journal, archive, entry = _run(tmp_path, tiny_sd, Scripted(faces=[0.92, 0.1] * 3),
                                        "retries = 2\nmax_delta_e = 50")
    (region,) = entry.details.regions
    assert region.gate == "failed" and len(region.tries) == 3
    assert [t.strength for t in region.tries] == [0.45, 0.338, 0.254]
    assert len({t.seed for t in region.tries}) == 3
    before = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(archive / "20-inpaint.png").convert("RGB")), before)
    assert entry.attention and "every try failed the quality gate" in entry.attention[0]
    flagged, n = journal.needing_review()
    assert n == 1 and "inpaint: face 0" in flagged[0].attention
    capsys.readouterr()
    assert _status(cfg, as_json=False, failures=10) == 0  # what `polishd status` prints
    out = capsys.readouterr().out
    assert "needs review: 1" in out and "face 0: every try failed the quality gate" in out


def test_the_colour_check_fails_a_repaint_on_its_own(tmp_path, tiny_sd):
    """The real ΔE of the tiny model's random pixels against a strict limit (face scores stubbed as fine)."""
    _, _, _, entry = _run(tmp_path, tiny_sd, Scripted(faces=[0.9, 0.9] * 2), "retries = 1\nmax_delta_e = 0.5")
    (region,) = entry.details.regions
    assert region.gate == "failed"
    assert all(t.scores["delta_e"] > 0.5 and "colour across the mask's edge moved" in t.why for t in region.tries)


def test_a_hand_must_still_be_found_with_its_fingers_apart():
    crop = np.zeros((64, 64, 3), np.uint8)
    mask = np.full((64, 64), 255, np.uint8)
    rules = gate.GateConfig(max_delta_e=50)
    box = (0, 0, 64, 64)
    good = gate.judge(Scripted(hands=[(0.9, True), (0.85, True)]), rules, "hand", crop, crop, mask, box)
    assert good.passed and good.scores["five_fingers"] is True
    blob = gate.judge(Scripted(hands=[(0.9, True), (0.85, False)]), rules, "hand", crop, crop, mask, box)
    assert not blob.passed and "five fingers are not apart" in blob.why
    gone = gate.judge(Scripted(hands=[(0.9, True), (0.0, False)]), rules, "hand", crop, crop, mask, box)
    assert not gone.passed and "no hand found after the repaint" in gone.why
    fist = gate.judge(Scripted(hands=[(0.9, False), (0.85, False)]), rules, "hand", crop, crop, mask, box)
    assert fist.passed  # curled fingers before: a thumbs-up stays a thumbs-up
    unseen = gate.judge(Scripted(hands=[(0.0, False), (0.0, False)]), rules, "hand", crop, crop, mask, box)
    assert unseen.passed and unseen.scores["hand"].startswith("not judged")


def test_the_gate_can_be_turned_off(tmp_path, tiny_sd):
    _, _, _, entry = _run(tmp_path, tiny_sd, Scripted(), "enabled = false")
    (region,) = entry.details.regions
    assert region.gate is None and region.tries == []
