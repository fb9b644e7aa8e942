"""``polishd`` with test-only stages, as a real process: python run_polishd.py [--sleep S] -- ARGS…"""

from __future__ import annotations

import sys

from daemon.cli import main
from tests.helpers.toy_stages import CopyStage, SleepStage

if __name__ == "__main__":
    argv = sys.argv[1:]
    sleep = 0.0
    if argv[:1] == ["--sleep"]:
        sleep, argv = float(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    sys.exit(main(argv, stages=[SleepStage(sleep), CopyStage()]))
