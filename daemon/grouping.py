"""Many checkpoints, few loads: which queued image goes next.

An inbox mixing SD 1.5, Pony and Illustrious images, taken in arrival order, loads a checkpoint for nearly
every image (seconds to a minute each on a GPU, more on a CPU).  Each queued job carries the checkpoint its
image names (``checkpoint_key``, read when it is queued).  A worker taking its next job prefers one whose
checkpoint it holds — the most recently used first — and so runs the images of one checkpoint together.

The bound: the oldest image in the queue is passed over by newer ones for at most ``[daemon].group_wait``
seconds (plus the job that is running when that time is up); then it goes next whatever it needs, and its
checkpoint's images follow it.  ``group_wait = 0`` is strict arrival order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from stages import generation
from stages.checkpoints import name_of


def checkpoint_key(path: Path) -> str:
    """The checkpoint an image names, as a group: its name as a file's stem would be (A1111's ``Model``,
    ComfyUI's ``ckpt_name``), else its hash; "" when it names none (it is painted with ``[inpaint].model``).
    Reads the metadata only (bounded, never raising)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            gen = generation.read(im)
    except Exception:  # not an image, or not readable: the runner says why; it groups with the rest
        return ""
    if gen is None:
        return ""
    if gen.checkpoint:
        return name_of(gen.checkpoint)[:200]
    return (gen.checkpoint_hash or "").lower()[:64]


def in_groups(paths: list[Path]) -> list[Path]:
    """``polishd process``'s files, those of one checkpoint together, the groups in the order their first file
    was given (every file is there from the start: nothing waits on a bound)."""
    first: dict[str, int] = {}
    keys = [checkpoint_key(p) if p.is_file() and not p.is_symlink() else "" for p in paths]
    for k in keys:
        first.setdefault(k, len(first))
    return [p for _, _, p in sorted(zip((first[k] for k in keys), range(len(paths)), paths, strict=True))]


def most_recent(keys: list[str], key: str, keep: int) -> list[str]:
    """``keys`` (newest first) with ``key`` moved to the front, at most ``keep`` of them."""
    return [key, *(k for k in keys if k != key)][:max(1, keep)]


def kept_models(max_loaded: int) -> int:
    """How many checkpoints a process holds at once: ``[inpaint].max_loaded``, or what the model owner was last
    told by the device's memory (one until the first model is loaded)."""
    from stages.held import OWNER

    return max_loaded or OWNER.limits.get("diffusion", 1)


class Grouping:
    """What one process (its workers share it) holds and prefers; thread-safe."""

    def __init__(self, wait: float, keep: int = 1, clock=time.monotonic):
        self.clock = clock
        self.wait = wait
        self.keep = max(1, keep)
        self.recent: list[str] = []  # the checkpoints of the last jobs taken, most recent first (up to ``keep``)
        self._head: tuple[int, float] | None = None  # the oldest queued job, and since when it has been the oldest
        self._lock = threading.Lock()

    def prefer(self, head: int, now: float | None = None) -> list[str]:
        """The checkpoints to prefer, given the oldest queued job ``head``: none once it has waited ``wait``
        seconds as the oldest (then it goes next)."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._head is None or self._head[0] != head:
                self._head = (head, now)
            if self.wait <= 0 or now - self._head[1] >= self.wait:
                return []
            return list(self.recent)

    def took(self, key: str | None) -> None:
        with self._lock:
            self.recent = most_recent(self.recent, key or "", self.keep)

    def hold(self, keys: list[str]) -> None:
        """What is held, said outright (the coordinator: the checkpoints its free workers hold)."""
        with self._lock:
            self.recent = list(keys)[: self.keep]

    def resize(self, wait: float, keep: int) -> None:
        """A reloaded config's values."""
        with self._lock:
            self.wait, self.keep = wait, max(1, keep)
            self.recent = self.recent[: self.keep]
