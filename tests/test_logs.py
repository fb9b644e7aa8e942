"""stderr is polishd's: with --log-format json every line is one JSON object, native libraries' output
included (re-emitted as structured events); on the console only polishd's own lines show."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import structlog
from PIL import Image

from daemon import logs
from tests.conftest import DATA, REPO, write_config

JOB = '[outpaint]\nenabled = false\n[upscale]\nenabled = false\n'  # detection (MediaPipe) and the sheet


def _process(tmp_path, *options: str, job: str = JOB, size: tuple[int, int] | None = None,
             models: Path | None = None) -> subprocess.CompletedProcess:
    """`polishd process` of the astronaut photo (resized to ``size``), with ``models`` as [paths].models if given."""
    config = write_config(tmp_path, job, models=models)
    src = tmp_path / "astronaut.png"
    if size is None:
        src.write_bytes((DATA / "astronaut.png").read_bytes())
    else:
        Image.open(DATA / "astronaut.png").resize(size).save(src)
    return subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), *options, "process",
                           "--no-progress", str(src)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_real_job_logs_one_json_object_per_stderr_line(tmp_path):
    out = _process(tmp_path, "--log-format", "json", "--log-level", "debug")
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(line) for line in out.stderr.splitlines()]  # every line parses, or this fails
    native = [e for e in events if e.get("source") == "native"]
    assert native, "MediaPipe's own output should arrive as events"
    assert all(e["level"] in ("debug", "warning") and "event" in e for e in native)
    finished = [e for e in events if e["event"] == "job finished"]
    assert len(finished) == 1 and finished[0]["status"] == "done" and finished[0]["image"].startswith("astronaut")
    assert any(e.get("stage") == "automask" and e["event"] == "stage completed" for e in events)


def test_mnn_s_own_prints_arrive_as_events_and_not_on_standard_output(tmp_path):
    # MNN's converter and sessions print to descriptor 1, past Python; polishd's stdout is its own summary.
    job = '[automask]\nenabled = false\n[outpaint]\nenabled = false\n' \
          '[upscale]\nmodel = "animevideov3"\nscale = 2\nbackend = "mnn"\n'
    models = tmp_path / "models"  # a folder of its own, so that the export is converted in this run
    out = _process(tmp_path, "--log-format", "json", "--log-level", "debug", job=job, size=(48, 40), models=models)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((models / "mnn").glob("*.mnn"))
    lines = out.stdout.splitlines()
    assert lines[0].startswith("astronaut") and "done" in lines[-1], out.stdout
    assert not [line for line in lines if "MNN" in line or "Convert" in line], out.stdout
    native = [e["event"] for e in map(json.loads, out.stderr.splitlines()) if e.get("source") == "native"]
    assert any("Converted Success" in e for e in native) and any("MNN use high precision" in e for e in native)


def test_the_console_shows_polishds_own_lines_only(tmp_path):
    out = _process(tmp_path, "--log-format", "console", "--log-level", "info")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert lines and not [line for line in lines if line.startswith(("INFO:", "W0000", "I0000", "E0000"))], lines
    assert any("stage completed" in line for line in lines)


def test_one_line_is_capped_and_a_traceback_is_a_field():
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    try:
        raise ValueError("x" * 50_000)
    except ValueError:
        structlog.get_logger("t").error("it broke", detail="y" * 30_000, exc_info=True)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert len(line) <= logs.MAX_LINE and event["event"] == "it broke" and "exception" in event
    assert event["detail"].startswith("yyyy") and "more characters" in event["detail"]


def test_python_warnings_and_library_logging_become_events():
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    warnings.warn("this old API goes away", DeprecationWarning, stacklevel=1)
    import logging

    logging.getLogger("somelib").warning("disk %s is slow", "sda")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any("this old API goes away" in e["event"] and e["source"] == "python" for e in events)
    assert any(e["event"] == "disk sda is slow" and e["level"] == "warning" for e in events)


def test_native_lines_are_classified_by_their_own_severity():
    w = logs._classify("W0000 00:00:1795511529.766368    8531 inference_feedback_manager.cc:121] Feedback off.")
    e = logs._classify("E0000 00:00:1795511529.766368    8531 calculator_graph.cc:887] Graph failed.")
    t = logs._classify("INFO: [environment.cc:36] Creating LiteRT environment with options")
    assert w == (10, "inference_feedback_manager.cc:121", "Feedback off.")
    assert e[0] == 30 and t == (10, "environment.cc:36", "Creating LiteRT environment with options")
