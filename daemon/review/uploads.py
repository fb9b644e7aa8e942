"""Files sent over HTTP: ``POST /api/jobs`` puts one into the pipeline, ``GET /api/jobs/<id>`` says how it went.

An upload gets the checks a dropped file gets, before anything is kept: its size (by its declared length,
before it is read), its type by content, its pixel count before decoding (the bomb guard), its decoding, and
its settings (a sidecar's tables, validated and confined like one).  A good one is written under
``[paths].state/uploads/`` and queued in the journal like an inbox file (the daemon takes it, and removes it
once archived); a bad one gets a 4xx with the reason and leaves nothing behind.  Uploads need the review
page's token, always: without one, any web page open in a browser on the machine could post files into the
pipeline.  At most ``UPLOADS_AT_ONCE`` are received at a time and ``[review].uploads_queued`` wait in the queue.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import tomllib
import uuid
from pathlib import Path

from daemon import archive as arc
from daemon import config as config_mod
from daemon.config import Config, ConfigError
from daemon.intake import InputError, Undecodable, decode, sniff
from daemon.journal import Job, Journal

UPLOADS_AT_ONCE = 4            # uploads received at the same time; one more is answered 429
SETTINGS_LIMIT = 64 * 1024     # bytes of an upload's settings, as a sidecar's
NAME = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")
RECEIVING = threading.BoundedSemaphore(UPLOADS_AT_ONCE)


class Refused(Exception):
    """An upload that is not taken: the HTTP status and the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def check_length(header: str | None, cfg: Config) -> None:
    """Before anything is read: a declared length, and not past what a dropped file may be."""
    if header is None or not header.isdigit():
        raise Refused(411, "send the upload with a Content-Length")
    if int(header) > cfg.daemon.max_bytes + SETTINGS_LIMIT + 64 * 1024:
        raise Refused(413, f"the upload is larger than [daemon].max_bytes ({cfg.daemon.max_bytes} bytes)")


def file_name(name: str | None) -> str:
    """The name the image is known by: a plain file name, never a path."""
    if not name or not NAME.match(name) or name in (".", "..") or name.startswith(".") or ".." in name:
        raise Refused(400, "the file's name must be a plain name (no folders, no '..', not hidden)")
    return name


def settings_of(raw: bytes | None, cfg: Config, name: str) -> tuple[dict, str]:
    """The upload's per-image settings (TOML or JSON) and the sidecar suffix to keep them under."""
    if not raw:
        return {}, ""
    if len(raw) > SETTINGS_LIMIT:
        raise Refused(413, f"settings are larger than {SETTINGS_LIMIT} bytes")
    try:
        text = raw.decode("utf-8")
        parsed, suffix = (json.loads(text), ".json") if text.lstrip().startswith("{") else (tomllib.loads(text),
                                                                                              ".toml")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(422, f"settings do not parse as TOML or JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise Refused(422, "settings must be tables of pipeline.toml")
    try:
        config_mod.with_overrides(cfg, parsed, f"{name} settings")
    except ConfigError as exc:
        raise Refused(422, str(exc)) from None
    return parsed, suffix


def check_image(data: bytes, name: str, cfg: Config) -> None:
    if len(data) > cfg.daemon.max_bytes:
        raise Refused(413, f"the file is larger than [daemon].max_bytes ({cfg.daemon.max_bytes} bytes)")
    kind = sniff(data[:16])
    if kind is None or kind not in cfg.daemon.formats:
        raise Refused(415, f"{name} is not one of the accepted images ({', '.join(cfg.daemon.formats)}), "
                           "by its content")
    try:
        decode(data, name, cfg.daemon.formats, cfg.daemon.max_pixels)
    except (InputError, Undecodable) as exc:
        raise Refused(422, str(exc)) from None


def accept(cfg: Config, journal: Journal, name: str, data: bytes, settings: bytes | None) -> Job:
    """Checks the upload, writes it (and its settings as a sidecar) under state/uploads, queues it."""
    name = file_name(name)
    check_image(data, name, cfg)
    _, suffix = settings_of(settings, cfg, name)
    if journal.uploads_waiting() >= cfg.review.uploads_queued:
        raise Refused(429, f"{cfg.review.uploads_queued} uploads wait in the queue already "
                           "([review].uploads_queued); send it again later")
    folder = cfg.paths.state / "uploads" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        path = folder / name
        if suffix:  # first: the image must find its settings when it is taken
            arc.atomic_write(folder / (name.rsplit(".", 1)[0] + suffix), settings)
        arc.atomic_write(path, data)
        st = path.stat()
        job = journal.enqueue_upload(path, hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return job


def archive_id(job: Job) -> str:
    """The archive folder's name as it will be (``<name>-<sha8>``; the job says the real one once it has one)."""
    return Path(job.archive).name if job.archive else f"{arc.safe_stem(job.name)}-{job.sha256[:8]}"
