"""Planning aspect-ratio variants: exact sizes, stepped extensions, shared first steps.

Sizes.  A ratio ``a:b`` becomes the smallest canvas ``(a·k, b·k)`` whose sides are
both multiples of 8 and at least the master's: exactly the requested aspect, and
never a crop.  (When ``a:b`` is far from the master's aspect, the long axis grows;
the other may grow by up to a few pixels to reach a multiple of 8.)  An exact
pixel size ``WxH`` at least as large as the master is the canvas itself; a smaller one is
planned as the ratio ``W:H`` and resized to ``W×H`` at the end (then, and only then, the
master's pixels are resampled).

Steps.  Each step grows each axis by at most ``max_step`` of its current size; the
extension is split between the sides by the anchor (centre: half each side).
Every step but the last grows by the full ``max_step``, so two variants that grow
the same axis from the same anchor take the same first steps; the outpaint stage
keys step results by that prefix and runs a shared step once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# An outpaint variant: "W:H" or "WIDTHxHEIGHT", optionally "@anchor".
VARIANT = re.compile(r"^(?:(\d+):(\d+)|(\d+)x(\d+))(?:@(center|left|right|top|bottom))?$")


@dataclass(frozen=True)
class Target:
    spec: str
    ratio: tuple[int, int]
    exact: tuple[int, int] | None
    anchor: str

    @property
    def label(self) -> str:
        """File-name-safe, as the user wrote it: "16x9", "21x9", "1920x1080", "16x9-left"."""
        base = self.spec.split("@")[0].replace(":", "x")
        return base + ("" if self.anchor == "center" else f"-{self.anchor}")


@dataclass(frozen=True)
class Step:
    size: tuple[int, int]  # canvas size after this step
    offset: tuple[int, int]  # where the previous canvas sits in it


@dataclass(frozen=True)
class Plan:
    target: Target
    size: tuple[int, int]  # the planned canvas (exact aspect)
    origin: tuple[int, int]  # where the master sits in it
    steps: tuple[Step, ...]


def parse_target(spec: str) -> Target:
    m = VARIANT.match(spec)
    if not m:
        raise ValueError(f"not a variant: {spec!r}")
    if m.group(1):
        a, b = int(m.group(1)), int(m.group(2))
        exact = None
    else:
        exact = (int(m.group(3)), int(m.group(4)))
        a, b = exact
    g = math.gcd(a, b)
    return Target(spec, (a // g, b // g), exact, m.group(5) or "center")


def canvas_size(master: tuple[int, int], ratio: tuple[int, int], multiple: int = 8) -> tuple[int, int]:
    """The smallest (a·k, b·k), both sides multiples of ``multiple``, holding ``master``."""
    a, b = ratio
    unit = math.lcm(multiple // math.gcd(a, multiple), multiple // math.gcd(b, multiple))
    k = max(math.ceil(master[0] / a), math.ceil(master[1] / b))
    k = math.ceil(k / unit) * unit
    return a * k, b * k


def _split(total: int, anchor: str, axis: int) -> int:
    """How much of ``total`` growth goes before the image (left or top) on this axis."""
    if (axis == 0 and anchor == "left") or (axis == 1 and anchor == "top"):
        return 0
    if (axis == 0 and anchor == "right") or (axis == 1 and anchor == "bottom"):
        return total
    return total // 2


def _axis_steps(start: int, end: int, max_step: float) -> list[int]:
    sizes, cur = [], start
    while cur < end:
        cur = min(end, cur + max(1, math.floor(cur * max_step)))
        sizes.append(cur)
    return sizes


def plan(master: tuple[int, int], spec: str, max_step: float = 0.3) -> Plan:
    target = parse_target(spec)
    exact = target.exact
    final = exact if exact and exact[0] >= master[0] and exact[1] >= master[1] else canvas_size(master, target.ratio)
    xs = _axis_steps(master[0], final[0], max_step)
    ys = _axis_steps(master[1], final[1], max_step)
    n = max(len(xs), len(ys))
    xs = xs + [final[0]] * (n - len(xs)) if xs else [master[0]] * n
    ys = ys + [final[1]] * (n - len(ys)) if ys else [master[1]] * n
    steps, prev = [], master
    for w, h in zip(xs, ys, strict=True):
        dx, dy = w - prev[0], h - prev[1]
        steps.append(Step((w, h), (_split(dx, target.anchor, 0), _split(dy, target.anchor, 1))))
        prev = (w, h)
    ox = sum(s.offset[0] for s in steps)
    oy = sum(s.offset[1] for s in steps)
    return Plan(target, final, (ox, oy), tuple(steps))
