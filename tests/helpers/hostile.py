"""A value that runs code when it is unpickled: what a hostile .pt, .ckpt or .bin file holds.  Unpickling it
writes ``marker``; a loader that refuses it leaves the marker absent."""

from __future__ import annotations

from pathlib import Path


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = Path(marker)
        self.marker.unlink(missing_ok=True)

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('ran')",))
