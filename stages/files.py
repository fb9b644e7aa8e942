"""Crash-safe files: atomic writes with fsync, content digests, and one image's snapshot folder.

Every file is written to a temporary name in the same folder, fsynced, moved into
place with ``os.replace`` and the folder fsynced, so a crash leaves either the old
file or the new one, never half of one.  The runner and the stages both write
through here; only the runner writes ``manifest.json`` (``daemon/archive.py``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

MANIFEST = "manifest.json"
# mkstemp creates files 0600; archive files should get the usual mode under the process umask
# (systemd's UMask=, a shell's umask).  Read once, at import, before any thread exists.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_save_image(path: Path, image: Image.Image, **save_args: Any) -> None:
    """Encodes straight into the temporary file: a big picture is not held twice more as encoded bytes."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[Path(path).suffix.lower()]
    if fmt == "PNG":
        save_args.setdefault("compress_level", 4)
    _atomic(Path(path), lambda f: image.save(f, format=fmt, **save_args))


def _atomic(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # write() and fsync() do not say where: a full disk should
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Folder:
    """One image's archive folder as a stage sees it: plain file names in, atomic writes out."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # Called before every write: raises when the writer may no longer write here (a cluster worker whose
        # job was sent on while it was frozen: daemon/runner.py).
        self.guard: Callable[[], None] | None = None

    def file(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"archive file names are plain names, got {name!r}")
        return self.path / name

    def writable(self, name: str) -> Path:
        if name == MANIFEST:
            raise ValueError(f"{MANIFEST} is the runner's to write")
        if self.guard is not None:
            self.guard()
        return self.file(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.writable(name)
        atomic_write(target, data)
        return target

    def write_with(self, name: str, write: Callable[[Any], Any]) -> Path:
        """``write(f)`` fills a new file through an open binary file, atomically (a picture encoded in bands)."""
        target = self.writable(name)
        _atomic(target, write)
        return target

    def save_image(self, name: str, image: Image.Image, **save_args: Any) -> Path:
        target = self.writable(name)
        atomic_save_image(target, image, **save_args)
        return target


def read_weights(path: Path):
    """A weights file's contents without running code: a ``.safetensors`` file, or a pickle (``.pt``, ``.ckpt``,
    ``.bin``) loaded tensors-only.  ValueError naming the file when it cannot be read so (a pickle that wants
    more than tensors and plain containers, a broken file)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path.name} could not be read safely ({type(exc).__name__})") from None


USER_FILE_LIMIT = 64 * 1024 * 1024  # a LUT, a logo, a key: far above any real one


def check_user_file(path: Path, limit: int = USER_FILE_LIMIT) -> Path:
    """``path`` if it is a regular file of at most ``limit`` bytes (following links); OSError otherwise.  A file a
    user names (a LUT, a logo) is read only then: a device (``/dev/zero``) or a FIFO would be read for ever."""
    import stat

    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path}: not a regular file")
    if st.st_size > limit:
        raise OSError(f"{path}: larger than {limit >> 20} MB")
    return path
