"""``polishd serve`` as a real process on a free loopback port, handed on once it answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.kit.pipeline import REPO
from bench.kit.redis_server import free_port


def start_serve(config: Path, log: Path, *options: str, timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """The server (its output in ``log``) and its address; RuntimeError with the log's end if it never answers."""
    port = free_port()
    with open(log, "wb") as out:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), *options, "serve",
                                 "--port", str(port)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/", timeout=1)
            return proc, url
        except OSError:
            if time.monotonic() > end or proc.poll() is not None:
                if proc.poll() is None:
                    proc.kill()
                raise RuntimeError(f"polishd serve did not answer on {url}: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
