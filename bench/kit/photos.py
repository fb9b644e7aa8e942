"""The photos a measuring script is given by path, checked before any model loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def given(ap: argparse.ArgumentParser, argv=None) -> tuple[argparse.Namespace, bool]:
    """``ap``'s arguments with ``photos`` (one or more paths) added, and whether every file named is there (those
    that are not are named on stderr)."""
    ap.add_argument("photos", nargs="+", type=Path)
    args = ap.parse_args(argv)
    missing = [p for p in args.photos if not p.is_file()]
    if missing:
        print(f"not there: {', '.join(map(str, missing))}", file=sys.stderr)
    return args, not missing
