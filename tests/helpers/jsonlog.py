"""A polishd process's JSON log, read back: one record per line that parses (a crash report may not)."""

from __future__ import annotations

import json
from pathlib import Path


def records(log: Path) -> list[dict]:
    out = []
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out
