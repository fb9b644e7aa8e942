"""What a worker's attempt did travels to the coordinator as typed ops: written down by the Recorder, encoded as
JSON, decoded and made against the coordinator's journal and inbox in order; a malformed step is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon import cluster
from daemon.journal import Job
from daemon.runner import FailureReport


def _job() -> Job:
    return Job(id=7, source="/inbox/a.png", name="a.png", sha256="ab" * 32, bytes=10, mtime=1.0, state="running",
               origin="inbox", attempts=2, owner=None, heartbeat=None, created=0.0, started=None, finished=None,
               archive=None, dup_of=None, last_error=None, error_stage=None)


class _Calls:
    """Stands in for the coordinator's journal and endings: notes each call made."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args, **kw: self.calls.append((name, args[1:], kw))


def test_a_recorded_attempt_crosses_as_json_and_is_made_in_order():
    job = _job()
    recorder = cluster.Recorder(None)
    recorder.set_archive(job.id, "/archive/a-abababab")
    recorder.requeue(job, error="boom", stage="upscale")
    report = FailureReport.of(job, "RuntimeError", "boom", "upscale", Path("/archive/a-abababab"))
    said = recorder.failed(job, "RuntimeError: boom", "upscale", report, ["not moved"])
    assert said == "RuntimeError: boom; not moved"
    wire = json.loads(json.dumps(recorder.encoded()))  # as Celery carries the result
    assert [op["op"] for op in wire] == ["set_archive", "requeue", "failed"]
    journal, endings = _Calls(), _Calls()
    cluster.apply(wire, job, journal, endings)
    assert journal.calls == [("set_archive", ("/archive/a-abababab",), {})]
    (requeue, failed) = endings.calls
    assert requeue == ("requeue", (), {"error": "boom", "stage": "upscale", "count_attempt": True})
    assert failed[0] == "failed" and failed[1][2] == report and failed[1][3] == ["not moved"]


def test_the_list_form_of_the_release_before_is_still_read():
    journal, endings = _Calls(), _Calls()
    cluster.apply([["done", {"sha256": "ab" * 32, "archive": "/archive/x"}]], _job(), journal, endings)
    assert endings.calls == [("done", ("ab" * 32, Path("/archive/x")), {})]


@pytest.mark.parametrize("step", ["garbage", ["explode", {}], {"op": "done", "sha256": 3, "archive": "/x"},
                                  {"op": "failed"}, None])
def test_a_malformed_step_is_refused_before_anything_is_made(step):
    journal, endings = _Calls(), _Calls()
    with pytest.raises(ValueError, match="a worker sent"):
        cluster.apply([{"op": "set_sha256", "sha256": "cd" * 32}, step], _job(), journal, endings)
    assert journal.calls == [] and endings.calls == []
