"""The machine a benchmark ran on, as its report names it."""

from __future__ import annotations

from pathlib import Path

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16",
         "amx_int8")


def cpu() -> tuple[str, list[str]]:
    """The CPU's name, with its family and model numbers (a virtual machine's name may only say "AMD EPYC":
    family 25 is Zen 3 and Zen 4, 26 is Zen 5), and which of ``FLAGS`` it has."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not line.strip():
                break  # the first processor's lines are enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name", "unknown CPU")
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    return model, [f for f in FLAGS if f in flags]
