"""A real Redis server for the cluster tests and bench/cluster.py: Debian's redis-server on a free loopback
port, its data in a folder of its own (append-only file, so a stop and start keeps the queue)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    pass


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None, password: str | None = None):
        self.folder = folder
        self.password = password
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fixed = port is not None
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Started and answering; a port another process took between our look and Redis's bind is traded for a
        new one (unless the port was given: a restart keeps its clients' address)."""
        for _ in range(5):
            try:
                return self._start()
            except PortTaken:
                if self.fixed:
                    raise
                self.port = free_port()
        raise RuntimeError("no free port for redis-server after 5 tries")

    def _start(self) -> RedisServer:
        assert REDIS, "redis-server is not installed (apt-get install redis-server)"
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
             "--daemonize", "no", "--logfile", str(self.folder / "redis.log"),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                log = (self.folder / "redis.log").read_text()[-2000:]
                if "Address already in use" in log:
                    raise PortTaken(log)
                raise RuntimeError(f"redis-server exited: {log}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 20 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
