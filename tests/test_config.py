from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.config import Config, ConfigError

REPO = Path(__file__).parent.parent


def _flatten(obj, prefix=""):
    out = {}
    for f in dataclasses.fields(obj):
        if not prefix and f.name in config_mod.META_FIELDS:  # the config's own, not options ([daemon].source is)
            continue
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):  # [[deliver.preset]]
            out[key] = [config_mod.section_dict(x) for x in v]
        else:
            out[key] = v
    return out


def _flatten_toml(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # [inpaint.face-eyes] is the field face_eyes
            out.update(_flatten_toml(v, f"{prefix}{k.replace('-', '_')}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_shipped_pipeline_toml_documents_every_option_with_its_default():
    text = (REPO / "pipeline.toml").read_text()
    shipped = _flatten_toml(tomllib.loads(text))
    defaults = _flatten(Config())
    inherited = {k for k, v in defaults.items() if v is None}  # documented as commented-out keys
    for key in inherited:
        assert f"# {key.rsplit('.', 1)[1]} = " in text, key
    assert set(shipped) == set(defaults) - inherited, "pipeline.toml and daemon/config.py disagree on the options"
    defaults = {k: v for k, v in defaults.items() if k not in inherited}
    for key, value in defaults.items():
        v = shipped[key]
        expected = [x if isinstance(x, dict) else str(x) for x in value] if isinstance(value, (tuple, list)) \
            else value
        if isinstance(value, Path):
            expected = str(value)
        assert (list(v) if isinstance(v, list) else v) == expected, key


def test_demo_config_is_valid():
    cfg = config_mod.load(REPO / "examples" / "demo.toml")
    assert cfg.paths.inbox.is_absolute()


def test_errors_name_the_table_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError) as e:
        config_mod.parse("[upscale]\nscale = 32\n[daemon]\nwatch = 'inotify'\nworkers = 0\n")
    msg = str(e.value)
    assert "pipeline.toml: [upscale].scale must be 2–16 (got 32)" in msg
    assert '[daemon].watch must be one of "native", "polling" (got "inotify")' in msg
    assert "[daemon].workers must be at least 1 (got 0)" in msg


def test_unknown_keys_are_errors_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown key \[upscale\]\.scael; did you mean 'scale'\?"):
        config_mod.parse("[upscale]\nscael = 2\n")
    with pytest.raises(ConfigError, match=r"unknown table \[upscal\]; did you mean 'upscale'\?"):
        config_mod.parse("[upscal]\nscale = 2\n")


def test_types_are_checked():
    with pytest.raises(ConfigError, match=r"\[daemon\]\.stability_delay must be a number \(got \"2s\"\)"):
        config_mod.parse("[daemon]\nstability_delay = '2s'\n")
    with pytest.raises(ConfigError, match=r"\[automask\.face\]\.merge must be true or false"):
        config_mod.parse("[automask.face]\nmerge = 1\n")
    with pytest.raises(ConfigError, match=r"\[upscale\]\.apply_to must be a list of"):
        config_mod.parse("[upscale]\napply_to = ['everything']\n")


def test_invalid_toml_is_reported_with_the_file_name():
    with pytest.raises(ConfigError, match=r"^pipeline.toml: not valid TOML"):
        config_mod.parse("[upscale\nscale = 2")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    p = tmp_path / "conf" / "pipeline.toml"
    p.parent.mkdir()
    p.write_text('[paths]\ninbox = "in"\narchive = "/abs/archive"\n')
    cfg = config_mod.load(p)
    assert cfg.paths.inbox == p.parent.resolve() / "in"
    assert cfg.paths.archive == Path("/abs/archive")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config_mod.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("text, message", [
    ("[inpaint]\nsteps = 0\n", "[inpaint].steps must be between 1 and 500 (got 0)"),
    ("[inpaint.face]\nstrength = 2\n", "[inpaint.face].strength must be between 0.0 and 1.0 (got 2.0)"),
    ("[inpaint.hand]\npadding = -1\n", "[inpaint.hand].padding must be between 0 and 1024 (got -1)"),
    ("[outpaint]\nguidance = 99\n", "[outpaint].guidance must be between 0.0 and 50.0 (got 99.0)"),
])
def test_diffusion_settings_are_bounded_in_every_table(text, message):
    with pytest.raises(ConfigError) as e:
        config_mod.parse(text)
    assert message in str(e.value)


def test_the_cluster_table_is_off_by_default_and_checked_with_the_password_hidden():
    cfg = config_mod.parse("")
    assert not cfg.cluster.enabled and cfg.cluster.visibility == cfg.cluster.task_timeout + 600
    with pytest.raises(ConfigError) as e:
        config_mod.parse('[cluster]\nbroker = "amqp://guest:hunter2@rabbit//"\nqueue = "a queue"\n'
                         "task_timeout = 0.5\nvisibility_timeout = 0.25\nheartbeat = 0.1\n")
    msg = str(e.value)
    assert "[cluster].broker must be a Redis URL (redis://, rediss:// or redis+socket://; " \
           "got 'amqp://guest:***@rabbit//')" in msg and "hunter2" not in msg
    assert "[cluster].queue must be 1–64 letters, digits, '_', '.' or '-' (got 'a queue')" in msg
    assert "[cluster].task_timeout must be at least 1.0 (got 0.5)" in msg
    assert "[cluster].visibility_timeout must be longer than [cluster].task_timeout (0.5)" in msg
    assert "[cluster].heartbeat must be at least 0.2 (got 0.1)" in msg
    tls = config_mod.parse('[cluster]\nbroker = "rediss://:pw@head:6380/1"\ntask_timeout = 60\n')
    assert tls.cluster.enabled and tls.cluster.visibility == 660


def test_a_sidecar_cannot_point_an_image_at_another_broker():
    cfg = config_mod.parse("")
    with pytest.raises(ConfigError, match=r"\[cluster\] cannot be set per image"):
        config_mod.with_overrides(cfg, {"cluster": {"broker": "redis://elsewhere/0"}}, "hero.toml")
