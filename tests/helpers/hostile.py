"""A value that runs code when it is unpickled: what a hostile .pt, .ckpt or .bin file holds.  Unpickling it
writes ``marker``; a loader that refuses it leaves the marker absent."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = Path(marker)
        self.marker.unlink(missing_ok=True)

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('ran')",))


def write_hostile(path: Path, wrap: Callable[[RunsCode], object]) -> Path:
    """A plain pickle at ``path`` of ``wrap(code)``, laid out as the file it poses as, where ``code`` would write
    a marker beside it when unpickled; returns the marker's path (absent while nothing ran)."""
    marker = path.with_name(path.name + ".ran")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(wrap(RunsCode(marker)), protocol=2))
    return marker
