"""structlog set-up: a human console on a TTY, JSON lines otherwise — every line of stderr.

Configured once per process, by the CLI.  Inside a job every line carries ``image`` and
``stage`` through structlog's contextvars.

Native libraries (MediaPipe/LiteRT, TensorFlow Lite, OpenVINO) write straight to file
descriptor 2, past Python.  ``capture_native()`` points descriptor 2 at a pipe and
re-emits each of their lines as a structured event (``source = "native"``): glog's
errors as warnings, everything else at debug level.  polishd's own lines go to the
real stderr, as do Python's warnings and stdlib logging (both through structlog), a
progress bar (``sys.stderr``), and a crash report (faulthandler).  One line is capped
at ``MAX_LINE`` characters; a traceback is a field.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import re
import sys
import threading
from typing import Any, TextIO

import structlog
import structlog.tracebacks

from daemon.config import redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_LINE = 16_000      # characters in one JSON line, at most
MAX_VALUE = 4_000      # characters of one string value before it is shortened
_GLOG = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")  # W0000 00:00:17.5 8531 file.cc:121] text
_TFLITE = re.compile(r"^(INFO|WARNING|ERROR): (?:\[([^\]]+)\] )?(.*)$")  # INFO: [environment.cc:36] text


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    global _console
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    _console = fmt == "console"
    shared = [
        structlog.contextvars.merge_contextvars,
        _redact,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        tail = [structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=_console_traceback())]
    else:
        # A traceback's frames without their locals: a config, a token or an image's bytes are no log's business.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        tail = [tracebacks, _cap, structlog.processors.JSONRenderer(default=str)]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (watchdog, diffusers) and Python's warnings go through structlog
    # too, from warning level up: the same format, one line each.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToStructlog):
            root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)  # captureWarnings(True) patches only once per process: apply it anew
    logging.captureWarnings(True)


def _redact(_logger, _name, event: dict) -> dict:
    """No password of a URL (a broker's, say) reaches a log line: ``redis://:secret@h`` → ``redis://:***@h``."""
    for k, v in event.items():
        if isinstance(v, str) and "://" in v:
            event[k] = redact(v)
    return event


class AboveTheBar:
    """A stream for structlog while a tqdm bar is drawn: each whole line is printed above the bar."""

    def __init__(self, bar, stream: TextIO):
        self.bar, self.stream, self._pending = bar, stream, ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self.bar.write(line, file=self.stream)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


_console = False


def live_line_fits() -> bool:
    """A live line under the log: console lines on a terminal (JSON lines are read by programs)."""
    return _console and sys.stderr.isatty()


def print_to(stream: TextIO) -> None:
    """Points structlog's output at ``stream``, keeping everything else of ``configure``."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(stream))


def get(name: str = "polishd") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def _console_traceback():
    """Rich tracebacks where rich is installed, without the locals (a config dump per frame is noise)."""
    try:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    except (AttributeError, ModuleNotFoundError):  # pragma: no cover - rich is optional
        return structlog.dev.plain_traceback


def _cap(_logger: Any, _name: str, event: dict) -> dict:
    """Keeps one rendered line under MAX_LINE: long strings are shortened, a long traceback keeps its end."""
    if len(json.dumps(event, default=str)) <= MAX_LINE:
        return event
    out = {k: _shorten(v) for k, v in event.items()}
    if len(json.dumps(out, default=str)) > MAX_LINE and "exception" in out:
        frames = out["exception"]
        out["exception"] = json.dumps(frames, default=str)[-MAX_VALUE:]  # the end of it: where it happened
    return out


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE:
        return value[:MAX_VALUE] + f"… ({len(value) - MAX_VALUE} more characters)"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value][:50]
    return value


class _ToStructlog(logging.Handler):
    """stdlib logging (and so Python's warnings) → structlog, one event per record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's broken format string is not worth losing the line for
            message = str(record.msg)
        structlog.get_logger(record.name).log(record.levelno, message.strip(), source="python")


# ------------------------------------------------------------------------------ native output

_native: _NativeCapture | None = None


def capture_native() -> None:
    """Sends what native code writes to file descriptor 2 through structlog (once per process)."""
    global _native
    if _native is None:
        _native = _NativeCapture()


class _NativeCapture:
    def __init__(self) -> None:
        real = os.dup(2)  # the terminal or journald: polishd's own lines keep going there
        self.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        sys.stderr = self.stderr  # Python's own writes (a progress bar, a last-resort message) skip the pipe
        faulthandler.enable(file=self.stderr)  # a crash report must not wait for a reader thread
        self.log = structlog.get_logger("polishd.native")
        self._thread = threading.Thread(target=self._pump, args=(read,), name="native-stderr", daemon=True)
        self._thread.start()

    def _pump(self, fd: int) -> None:
        pending = b""
        while chunk := os.read(fd, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.emit(line.decode("utf-8", "replace").rstrip())

    def emit(self, line: str) -> None:
        if not line.strip():
            return
        level, where, text = _classify(line)
        self.log.log(level, text[:MAX_VALUE], source="native", where=where)


def _classify(line: str) -> tuple[int, str, str]:
    """(level, source location, text): glog's and TensorFlow Lite's own severity, errors as warnings."""
    if m := _GLOG.match(line):
        severity, where, text = m.groups()
        return (logging.WARNING if severity in "EF" else logging.DEBUG), where, text
    if m := _TFLITE.match(line):
        severity, where, text = m.groups()
        return (logging.WARNING if severity == "ERROR" else logging.DEBUG), where or "", text
    return logging.DEBUG, "", line
