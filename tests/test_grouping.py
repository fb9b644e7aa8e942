"""Many checkpoints, few loads: the queue runs one checkpoint's images together, within a bound."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, PngImagePlugin

from daemon.grouping import Grouping, checkpoint_key, in_groups
from daemon.journal import Journal
from tests.conftest import DATA


def _a1111(path, model: str | None, model_hash: str | None = None):
    info = PngImagePlugin.PngInfo()
    settings = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    settings += f", Model hash: {model_hash}" if model_hash else ""
    settings += f", Model: {model}" if model else ""
    info.add_text("parameters", f"a portrait\nNegative prompt: ugly\n{settings}")
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_the_key_is_the_checkpoint_the_image_names(tmp_path):
    assert checkpoint_key(_a1111(tmp_path / "a.png", "ponyDiffusionV6XL_v6 [67ab2fd8ec]")) == "ponydiffusionv6xl_v6"
    assert checkpoint_key(_a1111(tmp_path / "b.png", "PonyDiffusionV6XL_v6.safetensors")) == "ponydiffusionv6xl_v6"
    assert checkpoint_key(_a1111(tmp_path / "c.png", None, "67AB2FD8EC")) == "67ab2fd8ec"
    assert checkpoint_key(_a1111(tmp_path / "d.png", None)) == ""
    (tmp_path / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert checkpoint_key(tmp_path / "e.png") == ""
    shutil.copyfile(DATA / "astronaut.png", tmp_path / "f.png")
    assert checkpoint_key(tmp_path / "f.png") == ""


def _queue(tmp_path, names: list[str]) -> Journal:
    journal = Journal(tmp_path / "journal.db")
    for n, key in enumerate(names):
        p = tmp_path / f"{n:02d}-{key or 'none'}.png"
        journal.enqueue(p, f"{n:064d}", 1, 0.0, key)
    return journal


def _drain(journal: Journal, grouping: Grouping | None) -> list[str]:
    order = []
    while (job := journal.claim(grouping=grouping)) is not None:
        order.append(job.checkpoint)
        journal.finish(job.id, "done")
    return order


def test_interleaved_images_run_one_checkpoint_after_another(tmp_path):
    arrived = ["sd15", "pony", "illustrious"] * 4 + [""]
    assert _drain(_queue(tmp_path / "a", arrived), None) == arrived  # no grouping: arrival order
    grouped = _drain(_queue(tmp_path / "b", arrived), Grouping(300.0))
    assert grouped == ["sd15"] * 4 + ["pony"] * 4 + ["illustrious"] * 4 + [""]
    assert _drain(_queue(tmp_path / "c", arrived), Grouping(0.0)) == arrived  # group_wait = 0
    # Two in memory: both are preferred, the most recently used first.
    two = Grouping(300.0, keep=2)
    two.took("pony")
    two.took("sd15")
    assert _drain(_queue(tmp_path / "d", arrived), two) == ["sd15"] * 4 + ["pony"] * 4 + ["illustrious"] * 4 + [""]


def test_the_oldest_image_is_passed_over_for_group_wait_seconds_at_most(tmp_path):
    now = [0.0]
    grouping = Grouping(60.0, clock=lambda: now[0])
    journal = _queue(tmp_path, ["pony", "pony", "sd15", "pony", "pony", "pony", "pony", "pony"])
    taken = []
    while (job := journal.claim(grouping=grouping)) is not None:
        journal.finish(job.id, "done")
        taken.append((now[0], job.checkpoint))
        now[0] += 25.0  # each image takes 25 s
    # sd15 became the oldest at t=50, once the two pony images older than it had gone; newer pony images went
    # before it while it had waited less than 60 s as the oldest (t=50, 75, 100); at t=125 it goes.
    assert taken == [(0.0, "pony"), (25.0, "pony"), (50.0, "pony"), (75.0, "pony"), (100.0, "pony"),
                     (125.0, "sd15"), (150.0, "pony"), (175.0, "pony")]


def test_process_runs_the_files_it_is_given_grouped_in_the_order_of_their_first(tmp_path):
    files = [_a1111(tmp_path / f"{n}.png", m) for n, m in enumerate(["b", "a", "b", None, "a", "b"])]
    assert [p.name for p in in_groups(files)] == ["0.png", "2.png", "5.png", "1.png", "4.png", "3.png"]


def test_at_most_max_loaded_engines_are_kept_the_least_recently_used_going_first(tmp_path, tiny_sd):
    from stages import generative
    from stages.diffusion import engine as engine_mod
    from stages.held import OWNER
    from stages.models import ModelKind, Models, ModelSetting

    folders = []
    for name in ("a", "b", "c"):
        shutil.copytree(tiny_sd, tmp_path / name)
        folders.append(tmp_path / name)

    def get(folder):
        return generative.acquire(Models(None, tmp_path), ModelSetting("[inpaint].model", str(folder),
                                                                         ModelKind.DIFFUSION), None, "cpu")
    engine_mod.unload()
    generative.configure(2)
    try:
        a, b = get(folders[0]), get(folders[1])
        assert get(folders[0]) is a and get(folders[1]) is b  # both held: no load
        get(folders[0])  # a is now the most recently used
        get(folders[2])  # a third: b goes
        held = {h["key"] for h in OWNER.held() if h["kind"] == "diffusion"}
        assert any(str(folders[0]) in k for k in held) and any(str(folders[2]) in k for k in held)
        assert not any(str(folders[1]) in k for k in held)
        assert get(folders[0]) is a and get(folders[1]) is not b
    finally:
        generative.configure(0)
        engine_mod.unload()


def test_max_loaded_by_device_memory():
    import os

    import torch

    from stages.generative import GB, slots

    assert slots(3, torch.device("cpu")) == 3
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert slots(0, torch.device("cpu")) == max(1, min(4, ram // (16 * GB)))
    assert slots(0, torch.device("mps")) == 1


@pytest.mark.parametrize("value", [-1, 9])
def test_max_loaded_out_of_range_is_named(tmp_path, value):
    from daemon import config as config_mod
    from tests.conftest import write_config

    with pytest.raises(config_mod.ConfigError, match=r"\[inpaint\]\.max_loaded must be 0 .* or 1–8"):
        config_mod.load(write_config(tmp_path, f"[inpaint]\nmax_loaded = {value}\n"))
