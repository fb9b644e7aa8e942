"""What counts as a job in the inbox, what travels with it, and reading it safely.

Untrusted input: names are never used to build output paths, links are refused
without touching their targets, formats are judged by content, and images are
decoded fully (with a pixel limit) before anything else sees them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from stages.picture import without_text

# The decompression-bomb guard is ours: decode() refuses anything over [daemon].max_pixels from the header,
# before a pixel is decoded, and says so in those words.  Pillow's own process-wide guard would fire first
# (at twice its constant) naming its constant instead, and would refuse the pipeline's own large outputs
# (a 4× upscale of a big photo) when a later stage opens them.
Image.MAX_IMAGE_PIXELS = None

# Names that are never jobs: partial downloads, editor and sync droppings, hidden files.
JUNK_PATTERNS = ("*.part", "*.tmp", "*.crdownload", ".*", "~*", "._*", "Thumbs.db", ".syncthing.*",
                 "*.error.json")
# Files that travel with an image of the same stem: suffix → archive name.
SIDECAR_SUFFIXES = {".mask.png": "00-sidecar-mask.png", ".remove.png": "00-sidecar-remove.png",
                    ".toml": "00-sidecar.toml", ".json": "00-sidecar.json"}
# What stages call them: archive name → kind (``JobContext.sidecars`` is keyed by kind).
SIDECAR_KINDS = {"00-sidecar-mask.png": "mask", "00-sidecar-remove.png": "remove", "00-sidecar.toml": "toml",
                 "00-sidecar.json": "json"}

_MAGIC = {
    "png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    "webp": lambda b: len(b) >= 12 and b[:4] == b"RIFF" and b[8:12] == b"WEBP",
}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class InputError(Exception):
    """The dropped file itself is unusable; retrying cannot help."""


class Undecodable(InputError):
    """Empty, or not a whole image: unusable as it is, though it may still be being written."""


def is_junk(name: str, extra_ignore: tuple[str, ...] = ()) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in (*JUNK_PATTERNS, *extra_ignore))


def sidecar_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in SIDECAR_SUFFIXES if lower.endswith(s)), None)


def image_stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def sidecars_for(image: Path) -> dict[str, Path]:
    """Sidecars beside ``image``: archive name → path (only regular files)."""
    stem = image_stem(image.name)
    found = {}
    for suffix, archive_name in SIDECAR_SUFFIXES.items():
        p = image.with_name(stem + suffix)
        try:
            if p != image and p.is_file() and not p.is_symlink():
                found[archive_name] = p
        except OSError:  # a name too long to exist (ENAMETOOLONG): there is no such sidecar
            continue
    return found


def owner_of_sidecar(sidecar: Path, names: set[str]) -> str | None:
    """The image name (among ``names``) that ``sidecar`` belongs to, if any."""
    suffix = sidecar_suffix(sidecar.name)
    if suffix is None:
        return None
    stem = sidecar.name[: -len(suffix)]
    return next((n for n in sorted(names) if n != sidecar.name and image_stem(n) == stem
                 and sidecar_suffix(n) is None), None)


def sniff(head: bytes) -> str | None:
    return next((fmt for fmt, test in _MAGIC.items() if test(head)), None)


@dataclass
class Dropped:
    """A dropped image, read once: the bytes we hash, archive and decode are the same bytes."""

    path: Path
    data: bytes
    sha256: str
    format: str  # png | jpeg | webp
    image: Image.Image | None  # decoded once at intake; the runner lets it go before the stages run
    notes: list[str] = field(default_factory=list)  # what of the file was not taken, for the manifest
    readable: bytes | None = None  # a PNG whose text Pillow refuses: the same pixels without its text chunks

    @property
    def ext(self) -> str:
        return EXTENSIONS[self.format]


def check_regular(path: Path) -> os.stat_result:
    """Refuses links (the target is never opened) and anything but a regular file."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{path.name} is a symbolic link; polishd takes only regular files (target left untouched)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a folder" \
            if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InputError(f"{path.name} is {kind}; polishd reads only regular files")
    if st.st_nlink > 1:
        raise InputError(f"{path.name} is a hard link ({st.st_nlink} names share it); "
                         "polishd takes only files that live in the inbox alone (other names left untouched)")
    return st


def read_bytes(path: Path, max_bytes: int) -> bytes:
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{path.name} is larger than [daemon].max_bytes ({max_bytes} bytes)")
    return data


def decode(data: bytes, name: str, formats: tuple[str, ...], max_pixels: int) -> tuple[str, Image.Image]:
    """Content-sniffs and fully decodes an image; every failure is an InputError naming the file."""
    if not data:
        raise Undecodable(f"{name} is empty (0 bytes)")
    fmt = sniff(data[:16])
    if fmt is None:
        raise InputError(f"{name} is not a PNG, JPEG or WebP image (by content)")
    if fmt not in formats:
        raise InputError(f"{name} is {fmt.upper()}, not accepted by [daemon].formats ({', '.join(formats)})")
    try:
        image = Image.open(io.BytesIO(data))
        w, h = image.size
        if w * h > max_pixels:
            raise InputError(f"{name} is {w}×{h} = {w * h} pixels, over [daemon].max_pixels ({max_pixels}); "
                             "refused before decoding (decompression-bomb guard)")
        image.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Undecodable(f"{name} cannot be decoded as {fmt.upper()}: {exc}") from None
    return fmt, image


def read_dropped(path: Path, formats: tuple[str, ...], max_pixels: int, max_bytes: int) -> Dropped:
    data = read_bytes(path, max_bytes)
    notes, readable = [], None
    try:
        fmt, image = decode(data, path.name, formats, max_pixels)
    except Undecodable as exc:
        # Pillow refuses a PNG whose text (a prompt, a workflow) decompresses past its bounds
        # (PngImagePlugin.MAX_TEXT_CHUNK / MAX_TEXT_MEMORY): the picture is kept, its text is not read.
        if "MAX_TEXT_" not in str(exc) or sniff(data[:16]) != "png":
            raise
        readable = without_text(data)
        fmt, image = decode(readable, path.name, formats, max_pixels)
        notes.append("its text metadata decompresses past the bounds polishd reads (a text chunk over "
                     f"{PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MB): not read; the picture is processed without it")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated ({frames} frames): the first frame is processed, the animation is not kept")
    return Dropped(path=path, data=data, sha256=hashlib.sha256(data).hexdigest(), format=fmt, image=image,
                   notes=notes, readable=readable)
