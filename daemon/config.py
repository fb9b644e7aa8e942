"""pipeline.toml → frozen, validated dataclasses.

``[paths]``, ``[daemon]`` and ``[log]`` are declared here; every stage declares its
own table (``Stage.Config`` in its module), and ``Config`` is assembled from the
ordered stage list in ``daemon/pipeline.py``.  Each option is declared once, with
its default; the root ``pipeline.toml`` documents the same options for people.  Errors name the file,
the table and the key, and say what is allowed::

    pipeline.toml: [upscale].scale must be 2–16 (got 32)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.pipeline import STAGES, default_stages
from stages.models import Models
from stages.schema import META_FIELDS, Errors, build, section_dict  # noqa: F401  (section_dict: re-exported)

CONFIG_ENV = "POLISHD_CONFIG"
DEFAULT_CONFIG_NAME = "pipeline.toml"


class ConfigError(ValueError):
    """pipeline.toml (or a sidecar) does not parse or does not validate."""




# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class PathsConfig:
    inbox: Path = Path("var/inbox")
    archive: Path = Path("var/archive")
    failed: Path = Path("var/failed")
    state: Path = Path("var/state")
    models: Path = Path("var/models")
    outbox: Path = Path("var/outbox")

    def check(self, err: Errors) -> None:
        pass


@dataclass(frozen=True)
class DaemonConfig:
    watch: Literal["native", "polling"] = "native"
    stability_delay: float = 2.0
    rescan_interval: float = 60.0
    workers: int = 1
    max_attempts: int = 3
    duplicates: Literal["skip", "process"] = "skip"
    stop_timeout: float = 30.0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    formats: tuple[Literal["png", "jpeg", "webp"], ...] = ("png", "jpeg", "webp")
    ignore: tuple[str, ...] = ()
    max_pixels: int = 89_478_485
    max_bytes: int = 512 * 1024 * 1024
    # The longest the oldest queued image is passed over by newer ones of a checkpoint already in memory
    # (daemon/grouping.py); 0 = strict arrival order.
    group_wait: float = 300.0
    source: tuple[SourceConfig, ...] = ()  # [[daemon.source]]: generator output folders watched beside the inbox
    source_poll: float = 10.0  # seconds between two looks at a source inotify cannot watch (or that is away)

    def check(self, err: Errors) -> None:
        labels = [s.label for s in self.source]
        for label in sorted({n for n in labels if labels.count(n) > 1}):
            err.add("source", f"names {label!r} twice; give each [[daemon.source]] a name of its own")
        err.at_least("stability_delay", self.stability_delay, 0.0)
        err.at_least("source_poll", self.source_poll, 1.0)
        err.at_least("group_wait", self.group_wait, 0.0)
        err.at_least("rescan_interval", self.rescan_interval, 1.0)
        err.at_least("workers", self.workers, 1)
        err.at_least("max_attempts", self.max_attempts, 1)
        err.at_least("stop_timeout", self.stop_timeout, 0.0)
        err.at_least("max_pixels", self.max_pixels, 1)
        err.at_least("max_bytes", self.max_bytes, 1)
        if not self.formats:
            err.add("formats", "must name at least one format")


# What a watched tree's walk skips by default: ComfyUI's previews, A1111's and Forge's grids, files still being
# downloaded or written, and hidden names.
SOURCE_EXCLUDE = ("ComfyUI_temp_*", "*_temp_*.png", "grid-*", "*-grid.*", "*.tmp", "*.part", "*.partial",
                  "*.crdownload", "*.download", ".*")


@dataclass(frozen=True)
class SourceConfig:
    """One [[daemon.source]]: a folder where generations land (A1111's outputs, ComfyUI's output/), watched
    beside the inbox.  "leave": each file stays as it is, taken once (the journal's ledger); "move": taken
    away like the inbox's."""

    path: str = ""
    name: str = ""                 # how status and the dashboard call it (default: the folder's name)
    mode: Literal["leave", "move"] = "leave"
    recursive: bool = True
    depth: int = 8                 # subfolder levels looked into (A1111: outputs/txt2img-images/<date>/ is 2)
    include: tuple[str, ...] = ("*.png", "*.jpg", "*.jpeg", "*.webp")
    exclude: tuple[str, ...] = SOURCE_EXCLUDE

    def check(self, err: Errors) -> None:
        if not self.path:
            err.add("path", "must name the folder to watch")
        err.between("depth", self.depth, 0, 64)
        if not self.include:
            err.add("include", "must have at least one pattern (\"*.png\", …)")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name or self.path


@dataclass(frozen=True)
class ClusterConfig:
    """Scale-out: with a broker, ``polishd run`` is the coordinator and ``polishd worker`` processes run the jobs."""

    broker: str = ""              # "" = in-process workers; "redis://host:6379/0", "rediss://…" for TLS
    queue: str = "polishd"        # the broker queue (and the prefix of polishd's keys in Redis)
    task_timeout: float = 3600.0  # the longest one job may take; past it the attempt fails at a safe point
    visibility_timeout: float = 0.0  # 0 = task_timeout + 600 s; an unacknowledged task is redelivered after it
    heartbeat: float = 5.0        # seconds between a worker's heartbeats; three missed ones and it is taken as gone

    @property
    def enabled(self) -> bool:
        return bool(self.broker)

    @property
    def visibility(self) -> float:
        return self.visibility_timeout or self.task_timeout + 600.0

    def check(self, err: Errors) -> None:
        if self.broker and not re.match(r"^(redis|rediss|redis\+socket)://", self.broker):
            err.add("broker", "must be a Redis URL (redis://, rediss:// or redis+socket://; "
                              f"got {redact(self.broker)!r})")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.queue):
            err.add("queue", f"must be 1–64 letters, digits, '_', '.' or '-' (got {self.queue!r})")
        err.at_least("task_timeout", self.task_timeout, 1.0)
        err.at_least("heartbeat", self.heartbeat, 0.2)
        if self.visibility_timeout and self.visibility_timeout <= self.task_timeout:
            err.add("visibility_timeout", f"must be longer than [cluster].task_timeout ({self.task_timeout:g}), "
                                          f"or 0 for task_timeout + 600 s (got {self.visibility_timeout:g})")


_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<secret>[^@/\s]+)@", re.I)


def redact(text: str) -> str:
    """A URL's password replaced by ``***``: ``redis://:s3cret@host`` → ``redis://:***@host``."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


@dataclass(frozen=True)
class ReviewConfig:
    """``polishd serve``: the review page."""

    host: str = "127.0.0.1"   # loopback by default; any other address needs a token
    port: int = 8750
    token: str = ""           # a shared secret: `Authorization: Bearer <token>`, or a login cookie made from it
    page_size: int = 48       # thumbnails per gallery page
    hosts: tuple[str, ...] = ()  # other names the page is reached by (a DNS name, a proxy's); others get 421
    uploads_queued: int = 1000   # uploads (POST /api/jobs) waiting in the queue at most; past that: 429

    def check(self, err: Errors) -> None:
        err.between("port", self.port, 1, 65535)
        err.between("page_size", self.page_size, 1, 500)
        err.at_least("uploads_queued", self.uploads_queued, 1)
        if self.token and len(self.token) < 16:
            err.add("token", "must be at least 16 characters (a shared secret, e.g. from `openssl rand -hex 24`)")


WEBHOOK_EVENTS = ("done", "failed", "needs_review", "approved", "delivered")


@dataclass(frozen=True)
class WebhookConfig:
    """One [[notify.webhook]]: a URL told of each event it asks for, in a JSON body signed with its secret."""

    url: str = ""
    secret: str = ""              # HMAC-SHA256 key: the X-Polishd-Signature header is sha256=<hex of the body's HMAC>
    events: tuple[Literal["done", "failed", "needs_review", "approved", "delivered"], ...] = WEBHOOK_EVENTS
    timeout: float = 10.0         # seconds one call may take; a receiver that does not answer is tried again later
    give_up: float = 86400.0      # seconds after which an event that was never taken is given up (status says so)

    def check(self, err: Errors) -> None:
        if not re.match(r"^https?://[^\s/@]+(/\S*)?$", self.url):
            err.add("url", f"must be an http:// or https:// URL without credentials in it (got {self.url!r})")
        if len(self.secret) < 16:
            err.add("secret", "must be at least 16 characters (the receiver checks each call's signature with it)")
        if not self.events:
            err.add("events", f"must name at least one of {', '.join(WEBHOOK_EVENTS)}")
        err.between("timeout", self.timeout, 1.0, 120.0)
        err.at_least("give_up", self.give_up, 60.0)


@dataclass(frozen=True)
class NotifyConfig:
    """Word back when an image is done: [[notify.webhook]] tables (none by default)."""

    webhook: tuple[WebhookConfig, ...] = ()

    def check(self, err: Errors) -> None:
        urls = [w.url for w in self.webhook]
        for url in sorted({u for u in urls if urls.count(u) > 1}):
            err.add("webhook", f"names {url!r} twice")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"
    progress_every: float = 5.0  # JSON lines: seconds between two progress events of a running job; 0: none

    def check(self, err: Errors) -> None:
        if self.progress_every:
            err.between("progress_every", self.progress_every, 1, 3600)


def _assemble() -> type:
    """The Config class: [paths], [daemon], [log], then each stage's own table in pipeline order."""

    tables = [("paths", PathsConfig), ("daemon", DaemonConfig), ("cluster", ClusterConfig), ("review", ReviewConfig),
              ("notify", NotifyConfig), ("log", LogConfig),
              *((stage.name, stage.Config) for stage in STAGES)]
    fields = [(name, cls, field(default_factory=cls)) for name, cls in tables]
    meta = [("source", Path | None, field(default=None)), ("sha256", str, field(default="")),
            ("raw", dict, field(default_factory=dict, compare=False, repr=False)),
            # per-image settings a sidecar gave (already merged into the tables above)
            ("overrides", dict, field(default_factory=dict, compare=False, repr=False))]

    def check(self, err: Errors) -> None:
        pass

    cls = dataclasses.make_dataclass("Config", fields + meta, frozen=True, namespace={"check": check})
    cls.__module__ = __name__
    return cls


Config = _assemble()
# Tables a per-image sidecar may override: the stages', not where files go or how the daemon runs.
SIDECAR_TABLES = tuple(f.name for f in dataclasses.fields(Config)
                       if f.name not in ("paths", "daemon", "cluster", "review", "notify", "log", *META_FIELDS))


# --------------------------------------------------------------------------- loading


def parse(text: str, origin: str = DEFAULT_CONFIG_NAME, source: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    return from_data(data, origin, source, hashlib.sha256(text.encode()).hexdigest())


def from_data(data: dict, origin: str, source: Path | None, sha256: str) -> Config:
    """A config from its parsed tables (as a coordinator sends them to its workers with each job)."""
    problems: list[str] = []
    cfg = build(Config, data, "", origin, problems)
    base = source.parent if source is not None else Path.cwd()
    if problems:  # said together with what else is wrong, so that one mistake does not hide another
        raise ConfigError("\n".join(problems + _missing_files(data.get("deliver"), base, origin)))
    paths = PathsConfig(**{f.name: _resolve(base, getattr(cfg.paths, f.name))
                           for f in dataclasses.fields(PathsConfig)})
    sources = tuple(dataclasses.replace(s, path=str(_resolve(base, Path(s.path)))) for s in cfg.daemon.source)
    if problems := _source_overlaps(sources, paths, origin):
        raise ConfigError("\n".join(problems))
    return dataclasses.replace(cfg, paths=paths, daemon=dataclasses.replace(cfg.daemon, source=sources),
                               source=source, sha256=sha256, raw=data)


def _source_overlaps(sources: tuple[SourceConfig, ...], paths: PathsConfig, origin: str) -> list[str]:
    """A watched tree must not hold polishd's own folders (it would take its own outputs) nor be the inbox."""
    out = []
    own = {"inbox": paths.inbox, "archive": paths.archive, "failed": paths.failed, "state": paths.state,
           "outbox": paths.outbox}
    for s in sources:
        root = Path(s.path)
        held = [key for key, folder in own.items() if folder == root or (s.recursive and root in folder.parents)]
        if held:
            out.append(f"{origin}: [[daemon.source]] {s.label!r} = {root} holds [paths]."
                       + ", ".join(held) + ": polishd would take its own files; watch a folder beside them")
    return out


# The settings that name a file: set per image (a sidecar, the review page's "retry with"), they may only name
# files under the config's folder or [paths].models.
FILE_KEYS = frozenset({"lut", "logo", "model", "model_config", "controlnet", "controlnet_config", "ip_adapter",
                       "ip_adapter_encoder", "face_model_short", "face_model_full", "hand_model", "certificate",
                       "private_key"})


def outside_files(cfg: Config, overrides: Any, where: str = "") -> list[str]:
    """The file settings in ``overrides`` that point outside the folders a per-image setting may name."""
    base = (cfg.source.parent if cfg.source is not None else Path.cwd()).resolve()
    allowed = [base, Path(cfg.paths.models).resolve()]
    out: list[str] = []
    items = overrides.items() if isinstance(overrides, dict) else enumerate(overrides) \
        if isinstance(overrides, list) else ()
    for key, value in items:
        here = f"{where}.{key}" if where else str(key)
        if isinstance(value, (dict, list)):
            out += outside_files(cfg, value, here)
        elif key in FILE_KEYS and isinstance(value, str) and value:
            real = _resolve(base, Path(value)).resolve()
            if not any(real == a or a in real.parents for a in allowed):
                out.append(f"{here} = {value!r}: a per-image setting may only name files under {base} or "
                           f"{allowed[1]}")
    return out


def with_overrides(cfg: Config, overrides: dict, origin: str) -> Config:
    """``cfg`` with a sidecar's tables merged in, validated like pipeline.toml itself; the files it names must
    lie under the config's folder or [paths].models."""
    problems = [f"{origin}: [{k}] cannot be set per image; only {', '.join(SIDECAR_TABLES)} can"
                for k in overrides if k not in SIDECAR_TABLES]
    problems += [f"{origin}: {p}" for p in outside_files(cfg, overrides)]
    if problems:
        raise ConfigError("\n".join(problems))
    merged = deep_merge(cfg.raw, overrides)
    built = build(Config, merged, "", origin, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()
    return dataclasses.replace(built, paths=cfg.paths, source=cfg.source, sha256=digest, raw=merged,
                               overrides=overrides)


def _missing_files(deliver: Any, base: Path, origin: str) -> list[str]:
    """The delivery presets' LUTs and logos that are not there (named even when another setting fails)."""
    presets = deliver.get("preset") if isinstance(deliver, dict) else None
    out = []
    for preset in presets if isinstance(presets, list) else ():
        if not isinstance(preset, dict):
            continue
        for key in ("lut", "logo"):
            value = preset.get(key)
            if isinstance(value, str) and value and not _resolve(base, Path(value)).is_file():
                out.append(f"{origin}: [deliver.preset.{preset.get('name', '?')}].{key} = {value!r}: no such file")
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


def load(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, origin=path.name, source=path.resolve())


def default_path(explicit: str | None) -> Path:
    """--config, then $POLISHD_CONFIG, then ./pipeline.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)




def models_for(cfg: Config) -> Models:
    """The model resolver for this config: relative names from the config file's folder, then [paths].models."""
    return Models(cfg.source.parent if cfg.source is not None else None, cfg.paths.models)


def model_problems(cfg: Config, origin: str) -> list[str]:
    """Every model setting of an enabled stage that resolves to nothing, as ``origin: [table].key = …: why``."""

    resolver = models_for(cfg)
    problems = []
    for stage in default_stages():
        params = stage.params(cfg)
        if not params.enabled:
            continue
        for setting in stage.model_settings(params):
            try:
                resolver.resolve(setting)
            except FileNotFoundError as exc:
                problems.append(f"{origin}: {exc}")
    return list(dict.fromkeys(problems))  # a model two stages use (inpaint's, for outpaint too) is said once


def source_report(cfg: Config, origin: str) -> list[str]:
    """Each watched folder as check-config says it: where it is, how it is taken, and whether it is there."""
    out = []
    for s in cfg.daemon.source:
        there = "" if Path(s.path).is_dir() else " — not there now: the source waits for it (an unmounted share?)"
        how = "files left in place, each taken once" if s.mode == "leave" else "files taken away like the inbox's"
        out.append(f"{origin}: source {s.label!r} = {s.path} ({how}; "
                   + (f"{s.depth} levels of subfolders" if s.recursive else "no subfolders") + f"){there}")
    return out


def problems_beside(path: Path) -> list[str]:
    """For a file that does not validate: the missing models of each table that validates on its own (with
    [paths]), so that one mistake does not hide another (check-config)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    out: list[str] = []
    for name, table in data.items():
        if name == "paths" or not isinstance(table, dict):
            continue
        try:
            cfg = from_data({"paths": data.get("paths", {}), name: table}, path.name, path.resolve(), "")
        except ConfigError:
            continue
        out += model_problems(cfg, path.name)
    return list(dict.fromkeys(out))


def checkpoint_report(cfg: Config, origin: str) -> tuple[list[str], list[str]]:
    """Each configured single-file checkpoint as its header says it is (family, inpainting, v-prediction), and
    whether it will load: (what it is, for a person; why it will not, as problems)."""
    from stages import checkpoints
    from stages.models import ModelKind

    resolver = models_for(cfg)
    notes, problems, seen = [], [], set()
    for stage in default_stages():
        params = stage.params(cfg)
        if not params.enabled:
            continue
        settings = stage.model_settings(params)
        configs = {m.setting.removesuffix("_config"): m for m in settings if m.kind == ModelKind.DIFFUSION_CONFIG}
        for m in settings:
            try:
                path = resolver.resolve(m).path if m.kind == ModelKind.DIFFUSION else None
            except FileNotFoundError:
                continue  # said by model_problems
            if path is None or not path.is_file() or (m.setting, path) in seen:
                continue
            seen.add((m.setting, path))
            try:
                ckpt = checkpoints.describe(path)
            except ValueError as exc:
                problems.append(f"{origin}: {m.setting} = {m.value!r}: {exc}")
                continue
            note, problem = _will_load(ckpt, m.setting, configs.get(m.setting), resolver)
            said = f"{origin}: {m.setting} = {path.name}: {ckpt.describe()}"
            (problems if problem else notes).append(f"{said}: {note}")
    return notes, problems


def detector_report(cfg: Config, origin: str) -> tuple[list[str], list[str]]:
    """Each [[automask.yolo]] detector opened as a job would open it (checked, then loaded): what it is (task,
    classes, input size), or why it cannot be used."""
    from automask import yolo
    from stages.detectors import held_yolo, yolo_settings

    if not cfg.automask.enabled or not cfg.automask.yolo:
        return [], []
    resolver = models_for(cfg)
    notes, problems = [], []
    for n, (entry, ms) in enumerate(zip(cfg.automask.yolo, yolo_settings(cfg.automask.yolo), strict=True)):
        said = f"{origin}: [[automask.yolo]] #{n + 1} ({entry.kind}) = {entry.model!r}"
        try:
            path = resolver.resolve(ms).path
            model = held_yolo(path, cfg.daemon.device)  # held: the daemon's first job finds it loaded
        except FileNotFoundError:
            continue  # said by model_problems
        except (ValueError, yolo.YoloUnavailable) as exc:
            problems.append(f"{said}: {exc}")
            continue
        notes.append(f"{said}: {model.describe()}")
        missing = [c for c in entry.classes if c not in model.names.values()]
        if missing:
            problems.append(f"{said}: has no class {', '.join(map(repr, missing))} (it has "
                            f"{', '.join(map(repr, list(model.names.values())[:12]))})")
    return notes, problems


def _will_load(ckpt, setting: str, config, resolver) -> tuple[str, bool]:
    """(what loading it takes, whether it will not load)."""
    from stages import checkpoints

    if (incomplete := ckpt.incomplete()) is not None:
        return (f"the file {incomplete}: it is not a whole checkpoint (a UNet-only or cut file); use the full "
                "checkpoint"), True
    if ckpt.family in checkpoints.SHIPPED_CONFIGS and config is None:
        return (f"loads with the {checkpoints.FAMILIES[ckpt.family].split(' ', 1)[1]} configs polishd ships"
                + (" as v-prediction" if ckpt.v_prediction else "")), False
    if ckpt.family == "flux":
        return (f"a full Flux single file is not an inpainting model; polishd paints with Flux Fill from its "
                f"diffusers folder (FLUX.1-Fill-dev): point {setting} at that folder"), True
    if ckpt.family not in ("sd1", "sd2", "sdxl"):
        return "not a checkpoint polishd can load", True
    if config is None:
        return (f"polishd ships configs for SD 1.x and SDXL only: set {setting}_config to a diffusers folder of "
                "its family (only its .json configs are read)"), True
    try:
        folder = resolver.resolve(config).path
        family = checkpoints.folder_family(folder)
    except (FileNotFoundError, ValueError, OSError):
        return f"{config.setting} cannot be read", True
    if family != ckpt.family:
        return f"{config.setting} describes {checkpoints.FAMILIES[family]} model, not this file's family", True
    return f"loads with the configs of {folder}" + (" as v-prediction" if ckpt.v_prediction else ""), False


def setting_problems(cfg: Config, origin: str) -> list[str]:
    """Every other file an enabled stage's settings name that is not there (a logo, a LUT, a signing key)."""

    return [f"{origin}: {p}" for stage in default_stages() if (params := stage.params(cfg)).enabled
            for p in stage.setting_problems(params)]
