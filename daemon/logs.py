"""structlog set-up: a human console on a TTY, JSON lines otherwise.

Configured once, by the CLI.  Inside a job every line carries ``image`` and
``stage`` through structlog's contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        tail = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    else:
        tail = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (watchdog, diffusers) stay quiet below warnings.
    logging.basicConfig(level=logging.WARNING, stream=stream)


def get(name: str = "polishd") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
