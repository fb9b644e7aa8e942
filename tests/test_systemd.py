"""The unit files pass systemd's own checker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ANALYZE = shutil.which("systemd-analyze")


def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
@pytest.mark.parametrize("name,instance", [("polishd.service", "polishd.service"),
                                           ("polishd-user.service", "polishd.service"),
                                           ("polishd-worker@.service", "polishd-worker@1.service"),
                                           ("polishd-review.service", "polishd-review.service")])
def test_unit_files_verify(tmp_path, name, instance):
    text = (REPO / "systemd" / name).read_text()
    # Point ExecStart at this checkout's polishd so that the checker can see an executable.
    polishd = Path(sys.executable).parent / "polishd"
    text = text.replace("/opt/polishd/.venv/bin/polishd", str(polishd)).replace("@REPO@/.venv/bin/polishd",
                                                                                  str(polishd))
    unit = tmp_path / instance  # a template is checked as one of its instances
    unit.write_text(text)
    result = _verify(unit)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if instance in line]
    assert warnings == []


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
def test_the_checker_does_catch_a_broken_unit(tmp_path):
    unit = tmp_path / "polishd.service"
    unit.write_text("[Service]\nType=notyfy\nExecStart=relative/path\n")
    assert _verify(unit).returncode != 0
