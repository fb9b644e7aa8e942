"""A polishd process's JSON log, read back: one record per line that parses (a crash report may not)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path


def records(log: Path) -> list[dict]:
    out = []
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out
