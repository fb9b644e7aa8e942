"""The one owner of loaded models: a model asked for twice is loaded once, a kind's limit unloads the least
recently used first, unloads run their callbacks, and what is held is reported with its size."""

from __future__ import annotations

import threading
import time

import torch

from stages.held import Held, model_bytes


def test_a_model_is_loaded_once_and_a_kinds_limit_unloads_the_least_recently_used():
    held, loads, unloads = Held({"diffusion": 2}), [], []

    def get(key):
        return held.get("diffusion", key, lambda: loads.append(key) or f"model {key}", unloads.append)

    assert get("a") == "model a" and get("a") == "model a" and loads == ["a"]
    get("b")
    get("a")  # a is now the most recently used
    get("c")  # over the limit of two: b goes, not a
    assert loads == ["a", "b", "c"] and unloads == ["model b"]
    assert sorted(h["key"] for h in held.held()) == ["a", "c"]
    held.get("detector", "x", lambda: "detector x")  # another kind counts against no limit of diffusion's
    assert held.drop("diffusion") == 2 and sorted(unloads) == ["model a", "model b", "model c"]
    assert [h["kind"] for h in held.held()] == ["detector"]


def test_idle_models_go_and_a_failing_unload_still_lets_the_model_go():
    held = Held()

    def broken(_value):
        raise RuntimeError("session already closed")

    held.get("upscaler", "x4plus", lambda: object(), broken)
    assert held.drop_idle("upscaler", 60) is False
    time.sleep(0.05)
    assert held.drop_idle("upscaler", 0.01) is True and held.held() == []


def test_two_jobs_asking_for_one_model_at_once_load_it_once():
    held, loads, started = Held(), [], threading.Barrier(2)

    def load():
        loads.append(1)
        time.sleep(0.2)
        return "engine"

    def ask(out):
        started.wait()
        out.append(held.get("diffusion", "sd15", load))

    got: list = []
    threads = [threading.Thread(target=ask, args=(got,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["engine", "engine"] and loads == [1]


def test_the_size_of_a_model_is_its_weights():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    # conv: 8×3×3×3 weights + 8 biases; batch norm: weight, bias, running mean and variance of 8 (fp32 all),
    # and its int64 count of batches
    expected = (8 * 3 * 3 * 3 + 8 + 4 * 8) * 4 + 8

    class Wrapper:  # an engine that wraps its network
        def __init__(self):
            self.net = net

    assert model_bytes(net) == model_bytes(Wrapper()) == expected > 0
    assert model_bytes("not a model") == 0
    held = Held()
    held.get("upscaler", "tiny", lambda: net)
    assert held.held() == [{"kind": "upscaler", "key": "tiny", "mb": round(expected / 2**20)}]
