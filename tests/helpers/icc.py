"""A small ICC v2 RGB profile written from its primaries: Display P3's, for colour-management tests.

Pillow's ImageCms creates sRGB, LAB and XYZ profiles only; a matrix/TRC profile is a header, a tag
table and seven small tags (ICC.1:2001-04, §6 and §7), so the test writes its own.
"""

from __future__ import annotations

import struct

# Display P3 primaries, adapted to the D50 profile connection space (as Apple's Display P3 profile stores them).
P3_D50 = {"rXYZ": (0.5151, 0.2412, -0.0011), "gXYZ": (0.2920, 0.6922, 0.0419), "bXYZ": (0.1571, 0.0666, 0.7841)}
D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256))


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_ + struct.pack(">II", 0, 0)
            + struct.pack(">HB", 0, 0) + b"\0" * 67)


def rgb_profile(description: str = "Display P3 (test)", primaries: dict = P3_D50, gamma: float = 2.2) -> bytes:
    tags = [("desc", _desc(description)), ("wtpt", _xyz(D50)),
            *((name, _xyz(xyz)) for name, xyz in primaries.items()),
            ("rTRC", _curve(gamma)), ("gTRC", _curve(gamma)), ("bTRC", _curve(gamma)),
            ("cprt", b"text" + b"\0" * 4 + b"public domain\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig.encode() + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
              + b"".join(_s15(v) for v in D50) + b"lcms" + b"\0" * 44)
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + data
