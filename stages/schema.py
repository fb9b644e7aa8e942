"""The toolkit every config table is built with: TOML table → frozen dataclass, checked, errors named.

A table is a frozen dataclass whose fields are its keys with their defaults, and
whose ``check(err)`` adds the problems that types alone do not catch.  Each stage
declares its own table (``Stage.Config``); ``daemon/config.py`` assembles them in
pipeline order with ``[paths]``, ``[daemon]`` and ``[log]``.  Errors name the
file, the table and the key, and say what is allowed::

    pipeline.toml: [upscale].scale must be 2–16 (got 32)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

META_FIELDS = ("source", "sha256", "raw", "overrides")  # Config fields that are not options


class Errors:
    """Collects every problem in one table so the user fixes them in one go."""

    def __init__(self, origin: str, table: str, problems: list[str]):
        self.origin, self.table, self.problems = origin, table, problems

    def add(self, key: str, message: str) -> None:
        where = f"[{self.table}].{key}" if self.table else f"[{key}]"
        self.problems.append(f"{self.origin}: {where} {message}")

    def one_of(self, key: str, value: Any, allowed: tuple) -> None:
        if value not in allowed:
            names = ", ".join(json.dumps(a) if isinstance(a, str) else str(a) for a in allowed[:-1])
            last = json.dumps(allowed[-1]) if isinstance(allowed[-1], str) else str(allowed[-1])
            self.add(key, f"must be one of {names} or {last} (got {show(value)})")

    def at_least(self, key: str, value: float, low: float) -> None:
        if value < low:
            self.add(key, f"must be at least {low} (got {show(value)})")

    def between(self, key: str, value: float, low: float, high: float) -> None:
        if not low <= value <= high:
            self.add(key, f"must be between {low} and {high} (got {show(value)})")

    def generation(self, section: Any) -> None:
        """The diffusion settings [inpaint], its per-kind tables and [outpaint] share; None = inherited."""
        for key, (low, high) in GENERATION_BOUNDS.items():
            value = getattr(section, key, None)
            if value is not None:
                self.between(key, value, low, high)


GENERATION_BOUNDS = {"steps": (1, 500), "guidance": (0.0, 50.0), "strength": (0.0, 1.0), "padding": (0, 1024)}


def show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def build(cls: type, data: dict, table: str, origin: str, problems: list[str]) -> Any:
    """Turns one TOML table into ``cls``, type-checking each key and naming the bad ones."""
    err = Errors(origin, table, problems)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if table or f.name not in META_FIELDS}  # top level only
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if "-" in key and key.replace("-", "_") in fields:  # [inpaint.face-eyes] is the field face_eyes
            key = key.replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            known = "keys" if table else "tables"
            hint = f"; did you mean {close[0]!r}?" if close else f"; known {known}: {', '.join(fields)}"
            where = f"key [{table}].{key}" if table else f"table [{key}]"
            problems.append(f"{origin}: unknown {where}{hint}")
            continue
        kind = hints[key]
        if typing.get_origin(kind) is tuple and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            item = typing.get_args(kind)[0]  # an array of tables: [[deliver.preset]]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                err.add(key, f"must be an array of tables ([[{table + '.' if table else ''}{key}]])")
                continue
            kwargs[key] = tuple(build(item, v, f"{table}.{key}.{v.get('name', i + 1)}" if table else key,
                                      origin, problems) for i, v in enumerate(value))
            continue
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                err.add(key, f"must be a table (got {show(value)})")
                continue
            kwargs[key] = build(kind, value, f"{table}.{key}" if table else key, origin, problems)
            continue
        ok, converted = _convert(kind, value)
        if ok:
            kwargs[key] = converted
        else:
            err.add(key, _describe(kind, value))
    obj = cls(**kwargs)
    obj.check(err)
    return obj


def _convert(kind: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(kind)
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if kind is Path:
        return isinstance(value, str) and value != "", Path(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):  # "X | None": TOML has no null, so it is an X
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return _convert(inner, value)
    if origin is Literal:
        return value in typing.get_args(kind) and type(value) in {type(a) for a in typing.get_args(kind)}, value
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(kind)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, c = _convert(item, v)
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out)
    raise TypeError(f"unsupported config type {kind!r}")  # pragma: no cover


def _describe(kind: Any, value: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _describe([a for a in typing.get_args(kind) if a is not type(None)][0], value)
    if origin is Literal:
        allowed = typing.get_args(kind)
        return "must be one of " + ", ".join(show(a) for a in allowed) + f" (got {show(value)})"
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if typing.get_origin(item) is Literal:
            allowed = ", ".join(show(a) for a in typing.get_args(item))
            return f"must be a list of {allowed} (got {show(value)})"
        return f"must be a list of {item.__name__} (got {show(value)})"
    name = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            Path: "a non-empty path string"}.get(kind, str(kind))
    return f"must be {name} (got {show(value)})"


def section_dict(obj: Any) -> dict:
    """A section (or any dataclass) as plain JSON-able data, for manifests and parameter hashes."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(obj))
