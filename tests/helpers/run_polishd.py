"""``polishd`` with test-only stages, as a real process:

    python -m tests.helpers.run_polishd [--sleep S] [--stages sleep,copy] -- ARGS…

``--stages`` lists the toy stages in order: sleep, copy, poison (fails for any image whose name holds
"poison"), hang (sleeps ``--sleep`` seconds with no safe point).
"""

from __future__ import annotations

import sys

from daemon.cli import main
from tests.helpers.toy_stages import CopyStage, HangStage, PoisonStage, SleepStage

if __name__ == "__main__":
    argv = sys.argv[1:]
    sleep, order = 0.0, ["sleep", "copy"]
    while argv and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--sleep":
            sleep = float(value)
        elif flag == "--stages":
            order = value.split(",")
        else:
            sys.exit(f"run_polishd: unknown option {flag}")
    argv = argv[1:]
    make = {"sleep": lambda: SleepStage(sleep), "copy": CopyStage, "poison": PoisonStage,
            "hang": lambda: HangStage(sleep)}
    sys.exit(main(argv, stages=[make[name]() for name in order]))
