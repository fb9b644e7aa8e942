"""The one owner of loaded models, in the manner of ComfyUI's ``model_management``.

Every model kept between jobs is held here, by kind ("diffusion", "controlnet", "upscaler", "detector",
"judge") and key (what it was loaded from, on which device, in which precision): the engines and stages ask
``OWNER.get(kind, key, load)`` and never keep a model of their own beyond a job.  A kind may have a limit (at
most so many of it at once); loading past it unloads the least recently used of that kind first.  ``drop``
unloads a kind (or everything, at shutdown) and ``drop_idle`` what has not been used for a while; each unload
frees the memory it can (Python's collector, the CUDA cache).  ``held()`` says what is in memory and about
how much of it, for logs and ``status``.

Loads of one kind are serialised (two jobs asking for the same model load it once); loads of different
kinds go on side by side, so a diffusion model loading never holds up the detector of another job.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("polishd.models")
T = TypeVar("T")


@dataclass
class _Entry:
    kind: str
    key: Hashable
    value: Any
    bytes: int
    unload: Callable[[Any], None] | None
    last_used: float = field(default_factory=time.monotonic)


class Held:
    def __init__(self, limits: dict[str, int] | None = None):
        self.limits = dict(limits or {})  # kind → how many may be in memory at once
        self._entries: dict[tuple[str, Hashable], _Entry] = {}
        self._lock = threading.Lock()  # the table itself, held only briefly
        self._loading: dict[str, threading.Lock] = {}
        self.loads: dict[str, int] = {}  # kind → models loaded by this process (for status and benchmarks)

    def get(self, kind: str, key: Hashable, load: Callable[[], T],
            unload: Callable[[T], None] | None = None) -> T:
        """The model of ``kind`` loaded from ``key``: the one in memory, else ``load()``'s (``unload`` is called
        with it when it goes, for what the collector cannot free by itself: a session, a file handle)."""
        with self._kind_lock(kind):
            with self._lock:
                entry = self._entries.get((kind, key))
                if entry is not None:
                    entry.last_used = time.monotonic()
                    return entry.value
                victims = self._over_limit(kind)
                for v in victims:
                    del self._entries[(v.kind, v.key)]
            self._release(victims)
            value = load()
            entry = _Entry(kind, key, value, model_bytes(value), unload)
            with self._lock:
                self._entries[(kind, key)] = entry
                self.loads[kind] = self.loads.get(kind, 0) + 1
            log.info("model loaded", kind=kind, mb=round(entry.bytes / 2**20), held=len(self._entries))
            return value

    def drop(self, kind: str | None = None) -> int:
        """Unloads every model of ``kind`` (every model with None); how many went."""
        with self._lock:
            gone = [e for e in self._entries.values() if kind is None or e.kind == kind]
            for e in gone:
                del self._entries[(e.kind, e.key)]
        self._release(gone)
        return len(gone)

    def drop_idle(self, kind: str, seconds: float) -> bool:
        """Unloads the models of ``kind`` unused for ``seconds``; whether any went."""
        if not seconds:
            return False
        now = time.monotonic()
        with self._lock:
            gone = [e for e in self._entries.values() if e.kind == kind and now - _last_used(e) > seconds]
            for e in gone:
                del self._entries[(e.kind, e.key)]
        self._release(gone)
        return bool(gone)

    def held(self) -> list[dict]:
        """What is in memory: kind, key and about how many megabytes of weights, the most recently used first."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: -e.last_used)
        return [{"kind": e.kind, "key": str(e.key), "mb": round(e.bytes / 2**20)} for e in entries]

    # ------------------------------------------------------------------ inside
    def _kind_lock(self, kind: str) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(kind, threading.Lock())

    def _over_limit(self, kind: str) -> list[_Entry]:
        """The least recently used of ``kind`` that must go before one more is loaded (called holding the lock)."""
        limit = self.limits.get(kind)
        if limit is None:
            return []
        same = sorted((e for e in self._entries.values() if e.kind == kind), key=lambda e: e.last_used)
        return same[:max(0, len(same) - limit + 1)]

    @staticmethod
    def _release(entries: list[_Entry]) -> None:
        for e in entries:
            if e.unload is not None:
                try:
                    e.unload(e.value)
                except Exception as exc:  # an unload that fails frees what it can; the model is gone from here
                    log.warning("model did not unload cleanly", kind=e.kind, error=f"{type(exc).__name__}: {exc}")
            log.info("model unloaded", kind=e.kind, mb=round(e.bytes / 2**20))
        if entries:
            gc.collect()
            torch = sys.modules.get("torch")  # never imported for this: only when something used it
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()


def _last_used(e: _Entry) -> float:
    """When the model was last asked for, or last used where it keeps that itself (an engine mid-job)."""
    own = getattr(e.value, "last_used", None)
    return max(e.last_used, own) if isinstance(own, (int, float)) else e.last_used


def model_bytes(value: Any, _depth: int = 0) -> int:
    """About how many bytes of weights a loaded model holds: a torch module's parameters and buffers, a
    diffusers pipeline's components, or those of the ``pipe``/``net``/``model`` it wraps; 0 when unknown."""
    if _depth > 3 or value is None:
        return 0
    params = getattr(value, "parameters", None)
    if callable(params) and hasattr(value, "buffers"):
        try:
            return sum(t.numel() * t.element_size() for t in (*value.parameters(), *value.buffers()))
        except (TypeError, AttributeError):
            return 0
    components = getattr(value, "components", None)
    if isinstance(components, dict):
        return sum(model_bytes(c, _depth + 1) for c in components.values())
    return sum(model_bytes(getattr(value, name, None), _depth + 1) for name in ("pipe", "net", "model"))


# Generative models: one until the first is acquired, then [inpaint].max_loaded (stages/generative.py: by the
# device's memory unless set).  One ControlNet at a time.
OWNER = Held({"diffusion": 1, "controlnet": 1, "upscaler": 4})  # upscalers: the model and up to three A/B candidates
