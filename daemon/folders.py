"""The folders of [paths]: made when missing, checked writable, and one plain line when they cannot be.

A folder the daemon cannot create or write is the user's to fix, not a bug: the CLI prints the line
(naming the setting, the path, why, and what to do) and exits 2, with no traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from daemon.config import Config

ROLES = {
    "inbox": "the inbox (images are removed from it once archived)",
    "archive": "the archive",
    "failed": "failed/ (images that could not be processed)",
    "state": "the state folder (the job journal)",
    "models": "the models folder (converted weights are cached there)",
    "outbox": "the outbox (the delivered files)",
}


class FolderProblem(Exception):
    """A [paths] folder that cannot be made or written."""


def prepare(cfg: Config, keys: tuple[str, ...]) -> None:
    """Makes each ``[paths].<key>`` folder if missing and checks that polishd can write in it."""
    for key in keys:
        _writable(key, getattr(cfg.paths, key))


def _writable(key: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderProblem(f"[paths].{key} = {path} cannot be created ({exc.strerror}): create it, or point "
                            f"[paths].{key} at a folder polishd may write") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".polishd-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FolderProblem(f"[paths].{key} = {path} is not writable ({exc.strerror}); polishd writes "
                            f"{ROLES[key]} there: give it write access (for the service: ReadWritePaths= in its "
                            f"unit), or point [paths].{key} elsewhere") from None


def existing_state(cfg: Config) -> Path:
    """The journal ``status`` and ``retry`` read: it must exist already."""
    journal = cfg.paths.state / "journal.sqlite3"
    if not cfg.paths.state.is_dir():
        raise FolderProblem(f"[paths].state = {cfg.paths.state} does not exist: nothing has run with this config "
                            "yet (or [paths].state points elsewhere than the daemon's)")
    if not journal.exists():
        raise FolderProblem(f"no journal in [paths].state = {cfg.paths.state}: nothing has run with this config yet")
    return journal


def shared(cfg: Config, keys: tuple[str, ...]) -> None:
    """A cluster worker's view of the shared ``[paths]``: each must exist already (a missing one is a
    storage that is not mounted here, which a worker must not paper over with an empty local folder)."""
    for key in keys:
        path = getattr(cfg.paths, key)
        if not path.is_dir():
            raise FolderProblem(f"[paths].{key} = {path} does not exist on this machine: mount the storage the "
                                "coordinator shares (every node sees [paths] at the same place; README.md, "
                                "Scale out)")
        if key == "inbox":
            if not os.access(path, os.R_OK | os.X_OK):
                raise FolderProblem(f"[paths].inbox = {path} is not readable here; a worker reads the "
                                    "images from it")
        else:
            _writable(key, path)
