"""The review page's model of an image: its typed manifest, what the page shows of it, and what reviewers decide.

Everything here reads and writes the manifest through ``daemon.archive`` (the typed record); no file name is
parsed and no stage's keys are read by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from daemon import archive as arc
from daemon import config as config_mod
from daemon import webhooks
from daemon.archive import ArchiveFolder, Manifest, ManifestError, PickRecord, ReviewDecision, RunRecord
from daemon.config import Config
from daemon.journal import Job, Journal
from daemon.ops import journal_path
from stages.picture import UPRIGHT, view
from stages.prompts import from_image
from stages.records import to_json

ID = re.compile(r"^[^/\\\x00]{1,255}$")
THUMB = 320
DECISIONS = {"approve": "approved", "reject": "rejected"}


@dataclass
class Archived:
    """One finished image as the page knows it: its id (the folder's name), folder and manifest."""

    id: str
    folder: Path
    manifest: Manifest

    @property
    def archive(self) -> ArchiveFolder:
        return ArchiveFolder(self.folder)


class Review:
    """What every request needs: the config, a journal connection per thread, where thumbnails live."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.journal = Journal(journal_path(cfg))
        self.thumbs = cfg.paths.state / "thumbnails"
        self.session = hmac.new(cfg.review.token.encode(), b"polishd review session", hashlib.sha256).hexdigest() \
            if cfg.review.token else ""
        self.secret = secrets.token_bytes(32)  # what the CSRF cookies this process hands out are signed with
        self._failures: dict[str, list[float]] = {}  # client → the times of its last wrong logins
        self._failures_lock = threading.Lock()

    # ------------------------------------------------------------------ logins
    LOGIN_TRIES, LOGIN_WINDOW = 5, 60.0  # wrong logins a client may make in a window of seconds

    def login_allowed(self, client: str) -> bool:
        now = time.monotonic()
        with self._failures_lock:
            recent = [t for t in self._failures.get(client, ()) if now - t < self.LOGIN_WINDOW]
            self._failures[client] = recent
            if len(self._failures) > 10_000:  # bounded: the oldest clients forgotten
                self._failures = dict(list(self._failures.items())[-5_000:])
            return len(recent) < self.LOGIN_TRIES

    def login_failed(self, client: str) -> None:
        with self._failures_lock:
            self._failures.setdefault(client, []).append(time.monotonic())

    # ------------------------------------------------------------------ CSRF
    def csrf_token(self) -> str:
        """A new CSRF token: a nonce and its HMAC under this process's secret (one a client makes up fails)."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]}"

    def csrf_valid(self, token: str) -> bool:
        nonce, _, mac = token.partition(".")
        good = hmac.new(self.secret, nonce.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]
        return bool(nonce) and hmac.compare_digest(mac.encode("utf-8", "replace"), good.encode())

    # ------------------------------------------------------------------ finding an image
    def folder(self, image_id: str) -> Path | None:
        """The archive folder of an image id (its folder's name), or None: never a path outside the archive."""
        if not ID.match(image_id) or image_id in (".", ".."):
            return None
        folder = self.cfg.paths.archive / image_id
        if folder.parent != self.cfg.paths.archive or not folder.is_dir() or folder.is_symlink():
            return None
        return folder

    def lookup(self, image_id: str) -> Archived | None:
        """The image of an id, or None when there is no such image (or its manifest cannot be read)."""
        folder = self.folder(image_id)
        if folder is None:
            return None
        try:
            manifest = ArchiveFolder(folder).read_manifest()
        except (OSError, ManifestError):
            return None
        return Archived(image_id, folder, manifest) if manifest is not None else None

    # ------------------------------------------------------------------ what the page shows
    def summary(self, image: Archived) -> dict:
        """The image page's data: every picture by role, the prompt, models and times, and the decisions."""
        m = image.manifest
        products = m.products()
        original = _upright(image)
        upscaled = {u.source: u.picture.name for u in products.upscaled or () if not u.engine}
        job = self.journal.by_archive(str(image.folder))
        return {
            "id": image.id, "name": m.source.name or image.id, "status": str(m.status),
            "original": original, "master": m.master(original),
            "detections": products.detections.picture.name if products.detections else None,
            "regions": [{"before": r.before, "after": r.after} for r in m.regions()],
            "variants": _variants(image, original, upscaled),
            "upscale": _upscale(m),
            "delivered": deliveries(m),
            "prompt": _prompt(image.folder / m.original),
            "generation": _generation(m),
            "stages": [{"name": s.name, "status": str(s.status), "seconds": s.duration_s, "reason": s.reason,
                        "models": [r.name or r.path for r in s.models]} for s in m.stages],
            "comparisons": comparisons(image),
            "review": [to_json(r) for r in m.review], "runs": [to_json(r) for r in m.runs],
            "overrides": m.overrides,
            "state": DECISIONS.get(job.review if job else None, "awaiting"),
            "job": job.id if job else None,
            "attention": m.attention(),
        }

    def delivered_file(self, image: Archived, preset: str) -> Path | None:
        """A delivered file of an image, by its preset's name as the manifest lists it: a regular file inside
        the outbox, or None."""
        details = image.manifest.details("deliver")
        found = next((d for d in details.deliveries if d.preset == preset), None) if details is not None else None
        if found is None:
            return None
        path, outbox = Path(found.path), self.cfg.paths.outbox.resolve()
        try:
            real = path.resolve(strict=True)
        except OSError:
            return None
        if outbox not in real.parents or not real.is_file() or path.is_symlink():
            return None
        return real

    def thumbnail(self, image: Archived) -> Path:
        """Made once from the finished master, then served from [paths].state/thumbnails."""
        self.thumbs.mkdir(parents=True, exist_ok=True)
        path = self.thumbs / (hashlib.sha256(image.id.encode()).hexdigest()[:32] + ".jpg")
        if not path.exists():
            master = image.manifest.master(_upright(image))
            with Image.open(image.folder / master) as im:
                im.draft("RGB", (THUMB * 2, THUMB * 2))
                rgb = view(im).flat()  # 16-bit scaled, transparency over grey, as the contact sheet shows it
            rgb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=82)
            arc.atomic_write(path, buf.getvalue())
        return path

    # ------------------------------------------------------------------ what reviewers decide
    def rerun(self, image: Archived, keep_review: bool = True) -> Job:
        """Queues the archived image to run again in its own folder; the daemon takes it.  The image's review
        decision stays with it unless ``keep_review`` is false."""
        m = image.manifest
        return self.journal.enqueue_rerun(image.folder, image.folder / m.original, m.source.name or image.id,
                                          m.source.sha256, keep_review)

    def retry_with(self, image: Archived, settings: dict, who: str) -> tuple[Job, int]:
        """Keeps this run as runs/<n>/ (hard links: the files are replaced, never rewritten, so the links keep
        the old bytes; the original is not repeated there), writes the image's settings (its earlier ones with
        these on top) as its sidecar, and queues it again.  Returns (the queued job, n).  ConfigError when the
        settings do not validate."""
        m, folder = image.manifest, image.folder
        merged = config_mod.deep_merge(m.overrides or {}, settings)
        config_mod.with_overrides(self.cfg, merged, "retry settings")
        runs = folder / "runs"
        n = 1 + max([int(p.name) for p in runs.iterdir() if p.name.isdigit()] if runs.is_dir() else [0])
        keep = runs / str(n)
        keep.mkdir(parents=True)
        for p in sorted(folder.iterdir()):  # the original stays on top alone: it never changes, and intake
            if p.is_file() and not p.is_symlink() and not p.name.startswith("00-original."):  # takes no links
                try:
                    os.link(p, keep / p.name)
                except OSError:  # a file system without hard links: a copy
                    shutil.copy2(p, keep / p.name)
        arc.fsync_dir(keep)
        (folder / "00-sidecar.toml").unlink(missing_ok=True)  # the settings now live in one sidecar
        arc.atomic_write(folder / "00-sidecar.json", (json.dumps(merged, indent=2) + "\n").encode())
        m.runs.append(RunRecord(n, f"runs/{n}", who, _now(), merged))
        image.archive.write_manifest(m)
        return self.rerun(image, keep_review=False), n

    def decide(self, image: Archived, decision: str, reason: str, variant: str | None, who: str) -> ReviewDecision:
        """Recorded in the journal and in the manifest's ``review`` list (who, when, what); an approval tells the
        webhooks that ask for it (sent by ``polishd run``)."""
        calls = []
        job = self.journal.by_archive(str(image.folder))
        if decision == "approve" and job is not None:
            payload = webhooks.job_payload(job, job.state, image.folder, image.manifest)
            calls = webhooks.calls(self.cfg, ["approved"], {**payload, "variant": variant, "reviewer": who,
                                                             "reason": reason})
        record = self.journal.add_review(str(image.folder), variant, decision, reason, who, outbox=calls)
        entry = ReviewDecision(who, _now(record["at"]), decision, reason, variant)
        image.manifest.review.append(entry)
        image.archive.write_manifest(image.manifest)
        return entry

    def pick(self, image: Archived, stage: str, choice: str, shown: list[str], who: str) -> PickRecord:
        """An A/B pick, recorded in the journal and the manifest's ``picks``."""
        record = self.journal.add_pick(str(image.folder), stage, choice, shown, who)
        entry = PickRecord(record["stage"], record["choice"], shown, who, _now(record["at"]))
        image.manifest.picks.append(entry)
        image.archive.write_manifest(image.manifest)
        return entry


def comparisons(image: Archived) -> list[dict]:
    """The A/B comparisons of an image: per stage, its candidates (in an order that does not give away which
    is which), and the reviewer's pick once made."""
    out = []
    for stage, candidates in image.manifest.comparisons():
        shown = [{"choice": c.choice, "picture": c.picture,  # the page names a candidate by this token only
                  "token": hashlib.sha256(f"{image.id}/{stage}/{c.choice}".encode()).hexdigest()[:12]}
                 for c in candidates]
        shown.sort(key=lambda c: c["token"])
        out.append({"stage": stage, "candidates": shown, "picked": image.manifest.picked(stage)})
    return out


def variant_labels(image: Archived) -> list[str]:
    return [v.label for v in image.manifest.products().variants or ()]


def item(job: Job) -> dict:
    """A gallery card (and the API's list entry) from the journal alone."""
    image_id = Path(job.archive).name if job.archive else None
    return {"id": image_id, "job": job.id, "name": job.name, "state": job.state,
            "review": DECISIONS.get(job.review, "awaiting"),
            "finished": job.finished, "error": job.last_error if job.state == "failed" else None,
            "attention": job.attention.splitlines() if job.attention else []}


def _variants(image: Archived, original: str, upscaled: dict[str, str]) -> list[dict]:
    """Each variant with what the page shows beside it: the master at the variant's scale (both drawn
    ``HEIGHT`` px high for the variant), the infill that alone made it, its seam figures and the gate's word."""
    m = image.manifest
    details = m.details("outpaint")
    plans = {v.label: v for v in details.variants} if details is not None else {}
    master = m.master(original)
    out = []
    for v in m.products().variants or ():
        x0, y0, x1, y1 = v.frame
        plan = plans.get(v.label)
        size = plan.output_size if plan is not None and plan.output_size else None
        scale = (y1 - y0) / size[1] if size else None  # the master's height as a share of the variant's
        out.append({"label": v.label, "picture": v.picture.name, "upscaled": upscaled.get(v.label),
                    "master": master, "master_height": round(VARIANT_HEIGHT * scale) if scale else None,
                    "height": VARIANT_HEIGHT, "infill": v.infill, "drift": plan.drift if plan else None,
                    "gate": plan.gate if plan else None})
    return out


VARIANT_HEIGHT = 320


def _upscale(m: Manifest) -> dict | None:
    """The upscaled master (for the page's 1:1 loupe) and its colour figures."""
    details = m.details("upscale")
    picture = next((u.picture.name for u in m.products().upscaled or () if u.source == "master" and not u.engine),
                   None)
    if details is None or picture is None:
        return None
    size = details.sizes.get(picture)
    return {"picture": picture, "size": size.to if size else None,
            "colour_fix": size.colour_fix if size else None, "drift": size.drift if size else None}


def deliveries(m: Manifest) -> dict:
    """What left for the outbox, preset by preset (with what was held back or failed, and why)."""
    details = m.details("deliver")
    if details is None:
        return {"files": [], "held": [], "failed": []}
    return {"files": [{"preset": d.preset, "name": Path(d.path).name, "size": d.size, "format": d.format,
                       "label": d.label} for d in details.deliveries],
            "held": [{"preset": h.preset, "reason": h.reason} for h in details.held],
            "failed": [{"preset": f.preset, "reason": f.reason} for f in details.failed]}


def _upright(image: Archived) -> str:
    """The picture the stages began from: the upright copy of a turned photo, else the original."""
    return UPRIGHT if (image.folder / UPRIGHT).is_file() else image.manifest.original


def _prompt(original: Path) -> dict:
    """The prompt the image carries (A1111 or ComfyUI metadata), read from the archived original."""
    try:
        with Image.open(original) as im:
            found = from_image(im)
    except OSError:
        found = None
    return {"positive": found.positive if found else "", "negative": found.negative if found else "",
            "source": found.source if found else ""}


def _generation(m: Manifest) -> list[tuple[str, str]]:
    """How the image says it was made, as (label, text) rows for the page."""
    g = m.source.generation
    if g is None:
        return []
    rows = [("tool", g.tool), ("checkpoint", (g.checkpoint or "") + (f" [{g.checkpoint_hash}]" if g.checkpoint_hash
                                                                    else "")), ("vae", g.vae or ""),
            ("loras", ", ".join(f"{x.name} {x.weight:g}" for x in g.loras)), ("embeddings", ", ".join(g.embeddings)),
            ("sampler", " ".join(v for v in (g.sampler, g.schedule) if v)),
            ("steps", str(g.steps or "")), ("cfg", f"{g.cfg:g}" if g.cfg is not None else ""),
            ("seed", str(g.seed if g.seed is not None else "")), ("clip skip", str(g.clip_skip or "")),
            ("size", "×".join(map(str, g.size)) if g.size else "")]
    return [(k, v) for k, v in rows if v.strip()]


def _now(at: float | None = None) -> str:
    when = datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)
    return when.isoformat(timespec="seconds")
