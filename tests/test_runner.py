"""The runner in-process, with test-only stages: archive, manifest, inbox hand-over, failures."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from daemon import config as config_mod
from daemon.archive import ArchiveFolder, SourceRecord
from daemon.runner import Runner
from stages.base import StageResult
from stages.products import Picture, Products
from tests.conftest import DATA, manifest_of, png_bytes, write_config
from tests.helpers.toy_stages import BoomStage, CopyStage, SleepStage


def _drop(cfg, name: str, data: bytes):
    p = cfg.paths.inbox / name
    p.write_bytes(data)
    return p


def _enqueue(journal, path):
    data = path.read_bytes() if not path.is_symlink() else b"link"
    st = os.lstat(path)
    return journal.enqueue(path, hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime)


def _run_next(journal, runner):
    job = journal.claim()
    assert job is not None
    return runner.run_job(job)


def test_done_job_archives_byte_identical_original_and_empties_inbox(workdir, journal):
    root, cfg = workdir
    data = (DATA / "astronaut.png").read_bytes()
    src = _drop(cfg, "astro naut ✨.png", data)
    (cfg.paths.inbox / "astro naut ✨.toml").write_text("[upscale]\nscale = 2\n")
    _enqueue(journal, src)
    runner = Runner(journal, lambda: cfg, [SleepStage(0), CopyStage()])
    out = _run_next(journal, runner)
    assert out.status == "done"
    sha = hashlib.sha256(data).hexdigest()
    assert out.archive.name == f"astro_naut-{sha[:8]}"
    assert (out.archive / "00-original.png").read_bytes() == data
    assert (out.archive / "00-sidecar.toml").read_text() == "[upscale]\nscale = 2\n"
    assert sorted(os.listdir(cfg.paths.inbox)) == []
    m = manifest_of(out.archive)
    assert m.status == "done" and m.source == SourceRecord("astro naut ✨.png", sha, len(data), "png")
    assert m.config_sha256 == cfg.sha256 and m.finished
    assert [s.name for s in m.stages] == ["sleep", "copy"]
    assert m.stages[1].outputs == ["16-copy.png"] and m.stages[1].status == "done"
    assert journal.get(out.job_id).state == "done"
    timings = json.loads(journal.get(out.job_id).timings)  # the dashboard's time per stage
    assert set(timings) == {"sleep", "copy"} and timings["copy"] == m.stages[1].duration_s
    assert not [p for p in out.archive.iterdir() if p.name.endswith(".tmp")]
    from daemon.archive import FILE_MODE
    assert {p.stat().st_mode & 0o777 for p in out.archive.iterdir()} == {FILE_MODE}  # not mkstemp's 0600


def test_disabled_and_unable_stages_are_recorded_as_skipped(workdir, journal):
    root, cfg = workdir

    class Unable(CopyStage):
        name = "unable"

        def skip_reason(self, ctx, params):
            return "nothing to do here"

    _enqueue(journal, _drop(cfg, "a.png", png_bytes()))
    out = _run_next(journal, Runner(journal, lambda: cfg, [Unable()]))
    (entry,) = manifest_of(out.archive).stages
    assert (entry.status, entry.reason, entry.outputs) == ("skipped", "nothing to do here", [])


def test_bad_input_goes_to_failed_at_once_with_a_report(workdir, journal):
    root, cfg = workdir
    src = _drop(cfg, "broken\nname.png", png_bytes()[:50])
    (cfg.paths.inbox / "broken\nname.mask.png").write_bytes(png_bytes())
    _enqueue(journal, src)
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "failed"
    moved = cfg.paths.failed / "broken\nname.png"
    assert moved.read_bytes() == png_bytes()[:50]
    assert (cfg.paths.failed / "broken\nname.mask.png").exists()
    report = json.loads((cfg.paths.failed / "broken\nname.png.error.json").read_text())
    assert report["error"] == "InputError" and report["stage"] == "intake" and report["attempts"] == 1
    assert list(cfg.paths.inbox.iterdir()) == []


def test_a_failing_stage_is_retried_then_failed_and_nothing_is_lost(workdir, journal):
    root, cfg = workdir
    data = png_bytes()
    _enqueue(journal, _drop(cfg, "x.png", data))
    runner = Runner(journal, lambda: cfg, [BoomStage()])
    statuses = [_run_next(journal, runner).status for _ in range(cfg.daemon.max_attempts)]
    assert statuses == ["retry", "retry", "failed"]
    assert (cfg.paths.failed / "x.png").read_bytes() == data
    report = json.loads((cfg.paths.failed / "x.png.error.json").read_text())
    assert report["stage"] == "boom" and report["attempts"] == 3 and "the model exploded" in report["message"]
    archive = next(cfg.paths.archive.iterdir())
    m = manifest_of(archive)
    assert m.status == "failed" and m.error.stage == "boom"
    assert journal.claim() is None


def test_failed_names_never_overwrite(workdir, journal):
    root, cfg = workdir
    (cfg.paths.failed / "x.png").write_bytes(b"earlier")
    _enqueue(journal, _drop(cfg, "x.png", b"not an image"))
    _run_next(journal, Runner(journal, lambda: cfg, []))
    assert (cfg.paths.failed / "x.png").read_bytes() == b"earlier"
    assert (cfg.paths.failed / "x-2.png").read_bytes() == b"not an image"
    assert (cfg.paths.failed / "x-2.png.error.json").exists()


def test_symlink_is_moved_as_a_link_and_its_target_untouched(workdir, journal, tmp_path):
    root, cfg = workdir
    target = tmp_path / "secret.png"
    target.write_bytes(png_bytes())
    link = cfg.paths.inbox / "link.png"
    link.symlink_to(target)
    _enqueue(journal, link)
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "failed" and "symbolic link" in out.error
    assert (cfg.paths.failed / "link.png").is_symlink()
    assert target.read_bytes() == png_bytes()


def test_duplicates_are_recorded_not_processed_twice(workdir, journal):
    root, cfg = workdir
    data = png_bytes()
    stage = CopyStage()
    runner = Runner(journal, lambda: cfg, [stage])
    _enqueue(journal, _drop(cfg, "first.png", data))
    first = _run_next(journal, runner)
    _enqueue(journal, _drop(cfg, "again.png", data))
    second = _run_next(journal, runner)
    assert (first.status, second.status) == ("done", "duplicate")
    assert stage.runs == 1
    assert list(cfg.paths.inbox.iterdir()) == []
    assert len(list(cfg.paths.archive.iterdir())) == 1
    assert [d.name for d in manifest_of(first.archive).duplicates] == ["again.png"]
    assert journal.get(second.job_id).dup_of == first.job_id


def test_a_duplicate_with_the_same_sidecar_leaves_none_behind_and_one_with_its_own_settings_is_processed(
        workdir, journal):
    root, cfg = workdir
    data = png_bytes(seed=12)
    stage = CopyStage()
    runner = Runner(journal, lambda: cfg, [stage])
    settings = b"[upscale]\nscale = 2\n"
    _enqueue(journal, _drop(cfg, "first.png", data))
    (cfg.paths.inbox / "first.toml").write_bytes(settings)
    first = _run_next(journal, runner)
    _enqueue(journal, _drop(cfg, "again.png", data))
    (cfg.paths.inbox / "again.toml").write_bytes(settings)
    again = _run_next(journal, runner)
    assert (first.status, again.status) == ("done", "duplicate")
    assert list(cfg.paths.inbox.iterdir()) == []  # its sidecar is not left as an orphan
    _enqueue(journal, _drop(cfg, "other.png", data))
    (cfg.paths.inbox / "other.toml").write_bytes(b"[upscale]\nscale = 3\n")
    other = _run_next(journal, runner)
    assert other.status == "done" and other.archive != first.archive and stage.runs == 2
    assert (other.archive / "00-sidecar.toml").read_bytes() == b"[upscale]\nscale = 3\n"
    assert manifest_of(other.archive).overrides == {"upscale": {"scale": 3}}
    assert list(cfg.paths.inbox.iterdir()) == []


def test_duplicates_process_mode_makes_a_second_archive(tmp_path):
    path = write_config(tmp_path)
    text = path.read_text().replace("[daemon]\n", '[daemon]\nduplicates = "process"\n')
    path.write_text(text)
    cfg = config_mod.load(path)
    from daemon.journal import Journal
    journal = Journal(cfg.paths.state / "j.sqlite3")
    runner = Runner(journal, lambda: cfg, [CopyStage()])
    for name in ("a.png", "b.png"):
        _enqueue(journal, _drop(cfg, name, png_bytes()))
        assert _run_next(journal, runner).status == "done"
    assert len(list(cfg.paths.archive.iterdir())) == 2


def test_a_resumed_job_keeps_stages_already_done_with_the_same_params(workdir, journal):
    root, cfg = workdir
    sleep, boom = SleepStage(0), BoomStage()
    _enqueue(journal, _drop(cfg, "r.png", png_bytes()))
    assert _run_next(journal, Runner(journal, lambda: cfg, [sleep, boom])).status == "retry"
    copy = CopyStage()
    out = _run_next(journal, Runner(journal, lambda: cfg, [sleep, copy]))
    assert out.status == "done"
    assert sleep.runs == 1 and copy.runs == 1


def test_a_resumed_job_removes_the_half_written_files_a_killed_attempt_left(workdir, journal):
    root, cfg = workdir
    _enqueue(journal, _drop(cfg, "k.png", png_bytes()))
    first = _run_next(journal, Runner(journal, lambda: cfg, [SleepStage(0), BoomStage()]))
    assert first.status == "retry"
    partial = first.archive / ".16-copy.png.k3j9x2.tmp"  # what a kill -9 in the middle of a write leaves
    partial.write_bytes(b"\x89PNG half")
    kept = sorted(p.name for p in first.archive.iterdir() if p != partial)
    out = _run_next(journal, Runner(journal, lambda: cfg, [SleepStage(0), CopyStage()]))
    assert out.status == "done" and out.archive == first.archive
    assert not partial.exists() and not [p for p in out.archive.iterdir() if p.name.endswith(".tmp")]
    assert set(kept) <= {p.name for p in out.archive.iterdir()}


def test_a_resumed_job_runs_a_stage_again_when_its_params_changed(workdir, journal):
    root, cfg = workdir
    _enqueue(journal, _drop(cfg, "p.png", png_bytes(seed=5)))
    first = _run_next(journal, Runner(journal, lambda: cfg, [SleepStage(0), CopyStage(), BoomStage()]))
    assert first.status == "retry"
    changed, copy = SleepStage(0.01), CopyStage()  # the config changed between the attempts
    again = _run_next(journal, Runner(journal, lambda: cfg, [changed, copy]))
    assert again.status == "done" and again.archive == first.archive  # the same job, the same folder
    assert changed.runs == 1 and copy.runs == 0  # copy's params and inputs are as before: kept
    assert manifest_of(again.archive).stages[0].params == {"seconds": 0.01, "enabled": True}


def test_a_stage_whose_input_changed_runs_again(workdir, journal):
    root, cfg = workdir

    class Varying(CopyStage):
        """Makes other pixels each time it runs, as a model on another GPU might."""

        name, prefix = "varying", "14"

        def run(self, ctx, params):
            self.runs += 1
            image = ctx.view(ctx.products.master).image()
            image.putpixel((0, 0), (self.runs * 40, 0, 0))
            name = ctx.save_picture("14-varying.png", image)
            return StageResult(outputs=[name], products=Products(master=Picture(name)))

    _enqueue(journal, _drop(cfg, "i.png", png_bytes(seed=6)))
    varying, copy = Varying(), CopyStage()
    first = _run_next(journal, Runner(journal, lambda: cfg, [varying, copy, BoomStage()]))
    assert first.status == "retry" and (varying.runs, copy.runs) == (1, 1)
    m = manifest_of(first.archive)
    m.stages = [s for s in m.stages if s.name != "varying"]  # as if it never finished: it runs again
    ArchiveFolder(first.archive).write_manifest(m)
    out = _run_next(journal, Runner(journal, lambda: cfg, [varying, copy]))
    assert out.status == "done" and (varying.runs, copy.runs) == (2, 2)  # its input changed: copy ran again
    assert Image.open(out.archive / "16-copy.png").getpixel((0, 0)) == (80, 0, 0)


def test_process_mode_leaves_inputs_where_they_are(workdir, journal, astronaut):
    root, cfg = workdir
    before = astronaut.read_bytes()
    st = os.lstat(astronaut)
    job = journal.start_direct(astronaut, hashlib.sha256(before).hexdigest(), st.st_size, st.st_mtime)
    out = Runner(journal, lambda: cfg, [CopyStage()]).run_job(job)
    assert out.status == "done" and astronaut.read_bytes() == before
    bad = astronaut.with_name("bad.png")
    bad.write_bytes(b"garbage")
    job = journal.start_direct(bad, "x", 7, 0.0)
    out = Runner(journal, lambda: cfg, [CopyStage()]).run_job(job)
    assert out.status == "failed" and bad.read_bytes() == b"garbage"
    assert list(cfg.paths.failed.iterdir()) == []


def test_journal_recovery_requeues_orphaned_running_jobs(workdir, journal):
    root, cfg = workdir
    _enqueue(journal, _drop(cfg, "a.png", png_bytes()))
    job = journal.claim()
    with journal._tx() as db:
        db.execute("UPDATE jobs SET owner=? WHERE id=?", (f"999999999@{job.owner.split('@')[1]}", job.id))
    requeued, abandoned = journal.recover()
    assert [j.id for j in requeued] == [job.id] and abandoned == []
    assert journal.claim().id == job.id


def test_same_file_seen_twice_is_queued_once(workdir, journal):
    root, cfg = workdir
    p = _drop(cfg, "a.png", png_bytes())
    assert _enqueue(journal, p) is not None
    assert _enqueue(journal, p) is None
    assert journal.counts()["queued"] == 1


def test_an_error_outside_the_stages_is_retried_then_failed(workdir, journal, monkeypatch):
    root, cfg = workdir
    data = png_bytes(seed=77)
    _enqueue(journal, _drop(cfg, "disk.png", data))
    runner = Runner(journal, lambda: cfg, [CopyStage()])

    def broken_disk(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("daemon.archive.ArchiveFolder.write_bytes", broken_disk)  # the archive's disk fails
    statuses = [_run_next(journal, runner).status for _ in range(cfg.daemon.max_attempts)]
    monkeypatch.undo()
    assert statuses == ["retry", "retry", "failed"]
    assert (cfg.paths.failed / "disk.png").read_bytes() == data
    assert journal.get(1).error_stage == "runner" and "Input/output error" in journal.get(1).last_error


def test_a_full_disk_requeues_the_job_without_an_attempt_and_leaves_no_folder(workdir, journal, monkeypatch):
    root, cfg = workdir
    data = png_bytes(seed=78)
    src = _drop(cfg, "full.png", data)
    _enqueue(journal, src)
    from stages.files import atomic_write as real

    def full(path, blob):
        if "archive" in str(path):
            raise OSError(28, "No space left on device")  # as write() says it: no file name
        return real(path, blob)

    monkeypatch.setattr("daemon.archive.atomic_write", full)
    monkeypatch.setattr("stages.files.atomic_write", full)
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "disk full" and "disk full at" in out.error
    job = journal.get(out.job_id)
    assert job.state == "queued" and job.attempts == 0 and job.archive is None
    assert [p for p in cfg.paths.archive.iterdir()] == []  # no empty or partial folder
    assert src.read_bytes() == data and list(cfg.paths.failed.iterdir()) == []
    monkeypatch.undo()  # space is back
    assert _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()])).status == "done"


def test_a_name_too_long_for_failed_cannot_wedge_the_queue(workdir, journal):
    root, cfg = workdir
    bad = _drop(cfg, "a" * 246 + ".png", b"not an image")  # 250 bytes: "<name>.error.json" cannot exist
    good = _drop(cfg, "b" * 246 + ".png", png_bytes(seed=12))
    for p in (bad, good):
        _enqueue(journal, p)
    runner = Runner(journal, lambda: cfg, [CopyStage()])
    first, second = _run_next(journal, runner), _run_next(journal, runner)
    assert (first.status, second.status) == ("failed", "done")
    assert journal.claim() is None and list(cfg.paths.inbox.iterdir()) == []
    (moved,) = [p for p in cfg.paths.failed.iterdir() if not p.name.endswith(".error.json")]
    assert moved.read_bytes() == b"not an image" and moved.suffix == ".png" and len(moved.name.encode()) <= 180
    report = json.loads(moved.with_name(moved.name + ".error.json").read_text())
    assert report["image"] == bad.name and report["moved_to"] == str(moved)
    assert (second.archive / "00-original.png").read_bytes() == png_bytes(seed=12)


def test_whatever_fails_while_failing_the_job_ends_failed_and_is_not_taken_again(workdir, journal, monkeypatch):
    root, cfg = workdir
    src = _drop(cfg, "stuck.png", b"junk")
    _enqueue(journal, src)

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("daemon.runner._move", refuse)  # failed/ cannot take it (read-only, another mount…)
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "failed" and "not moved to failed/" in out.error
    assert src.read_bytes() == b"junk"  # nothing lost: it stays where the user put it
    assert list(cfg.paths.failed.iterdir()) == []  # and no report without its image
    assert journal.get(out.job_id).state == "failed"
    assert _enqueue(journal, src) is None  # the watcher's rescan does not take it again…
    src.write_bytes(b"junk, edited")
    assert _enqueue(journal, src) is not None  # …until it changes


def test_a_writer_that_pauses_longer_than_the_stability_delay_loses_nothing(workdir, journal):
    root, cfg = workdir
    data = (DATA / "astronaut.png").read_bytes()
    src = cfg.paths.inbox / "slow.png"
    src.write_bytes(data[: len(data) // 2])  # the writer paused here; the watcher judged it stable
    _enqueue(journal, src)
    runner = Runner(journal, lambda: cfg, [CopyStage()])
    import threading

    writer = threading.Timer(0.1, lambda: src.write_bytes(data))  # …and goes on while polishd looks again
    writer.start()
    first = _run_next(journal, runner)
    writer.join()
    assert first.status == "waiting" and list(cfg.paths.failed.iterdir()) == []
    assert journal.get(first.job_id).attempts == 0 and journal.counts()["queued"] == 1
    _enqueue(journal, src)  # the watcher, seeing the file settle: the queued job takes the new bytes
    assert journal.counts()["queued"] == 1
    second = _run_next(journal, runner)
    assert second.status == "done" and (second.archive / "00-original.png").read_bytes() == data


def test_a_broken_file_that_does_not_change_still_fails_after_one_more_look(workdir, journal):
    root, cfg = workdir
    data = (DATA / "astronaut.png").read_bytes()[:5000]
    _enqueue(journal, _drop(cfg, "cut.png", data))
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "failed" and "cannot be decoded" in out.error
    assert (cfg.paths.failed / "cut.png").read_bytes() == data


def _replace_during(monkeypatch, path: Path, data: bytes) -> None:
    """Another writer puts ``data`` at ``path`` (os.replace, as an editor saves) inside the removal."""
    def writer(_path):
        tmp = path.with_name("writer.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    monkeypatch.setattr("daemon.runner._between_rename_and_check", writer)


def test_a_newer_file_put_in_place_while_the_finished_one_is_removed_is_never_lost(tmp_path, monkeypatch):
    from daemon.runner import _unlink_if_same

    path, ours, newer = tmp_path / "x.png", png_bytes(seed=1), png_bytes(seed=2)
    path.write_bytes(ours)
    _replace_during(monkeypatch, path, newer)
    _unlink_if_same(path, hashlib.sha256(ours).hexdigest())
    assert path.read_bytes() == newer  # the newer file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # ours gone, nothing else left


def test_a_file_replaced_before_the_removal_stays_and_one_replaced_again_during_it_is_kept_beside(tmp_path,
                                                                                                  monkeypatch):
    from daemon.runner import _unlink_if_same

    path = tmp_path / "x.png"
    ours, b, c = (png_bytes(seed=s) for s in (1, 2, 3))
    path.write_bytes(b)  # replaced before polishd came to remove it
    _unlink_if_same(path, hashlib.sha256(ours).hexdigest())
    assert path.read_bytes() == b
    _replace_during(monkeypatch, path, c)  # and again while polishd looks at b
    _unlink_if_same(path, hashlib.sha256(ours).hexdigest())
    assert path.read_bytes() == c and (tmp_path / "x-2.png").read_bytes() == b
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-2.png", "x.png"]


def test_a_removal_killed_between_its_rename_and_its_check_is_settled_at_the_next_start(tmp_path, monkeypatch):
    """A process killed right after moving an archived inbox file aside leaves it under a hidden name (a
    cluster's coordinator was caught so by ``kill -9``).  The next start removes it when it holds the bytes its
    name says, and puts it back, visible, when it does not (a newer file written just before the rename): the
    inbox is left as if the removal had finished, and nothing a user wrote is lost."""
    from daemon.runner import REMOVING, _unlink_if_same, settle_removals

    class Killed(BaseException):
        pass

    def kill(_path):
        raise Killed
    monkeypatch.setattr("daemon.runner._between_rename_and_check", kill)
    ours, newer = png_bytes(seed=1), png_bytes(seed=2)
    (tmp_path / "done.png").write_bytes(ours)
    (tmp_path / "done.mask.png").write_bytes(newer)  # replaced after it was archived: other bytes
    for name in ("done.png", "done.mask.png"):
        with pytest.raises(Killed):
            _unlink_if_same(tmp_path / name, hashlib.sha256(ours).hexdigest())
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith(REMOVING) for n in left)
    (tmp_path / "other.png").write_bytes(ours)  # a file of the inbox's own is never touched
    back = settle_removals(tmp_path)
    assert [p.name for p in back] == [f"recovered-{hashlib.sha256(b'done.mask.png').hexdigest()[:12]}.mask.png"]
    assert back[0].read_bytes() == newer
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([back[0].name, "other.png"])
    assert settle_removals(tmp_path) == []


def test_a_job_whose_every_attempt_was_killed_ends_in_failed_not_in_a_loop(workdir, journal):
    """kill -9 in the middle of a job, again and again: each restart puts it back in the queue, and each start
    counts; past max_attempts it fails with a report instead of starting a fourth, fifth, sixth time."""
    root, cfg = workdir
    data = png_bytes()
    _enqueue(journal, _drop(cfg, "x.png", data))
    for _ in range(cfg.daemon.max_attempts):  # started, then the process running it was killed
        assert journal.claim() is not None
        requeued, _ = journal.recover()
        assert len(requeued) == 1
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "failed" and "started 3 times without finishing" in out.error
    assert (cfg.paths.failed / "x.png").read_bytes() == data  # nothing lost: the file, with its report
    report = json.loads((cfg.paths.failed / "x.png.error.json").read_text())
    assert report["error"] == "Interrupted" and report["attempts"] == 4
    assert journal.claim() is None


def test_a_read_only_archive_pauses_like_a_full_disk_and_drains_nothing(workdir, journal, monkeypatch):
    root, cfg = workdir
    sources = []
    for n in range(3):
        sources.append(_drop(cfg, f"ro{n}.png", png_bytes(seed=90 + n)))
        _enqueue(journal, sources[-1])
    from stages.files import atomic_write as real

    def read_only(path, blob):
        if "archive" in str(path):
            raise OSError(30, "Read-only file system", str(path))
        return real(path, blob)

    monkeypatch.setattr("daemon.archive.atomic_write", read_only)
    monkeypatch.setattr("stages.files.atomic_write", read_only)
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "disk full" and out.error.startswith("read-only at ")
    assert journal.counts()["queued"] == 3 and journal.counts()["failed"] == 0  # none drained to failed/
    assert all(p.exists() for p in sources) and list(cfg.paths.failed.iterdir()) == []
    job = journal.get(out.job_id)
    assert job.attempts == 0 and job.last_error.startswith("read-only at ")


def test_a_drawn_mask_of_another_shape_is_refused_by_name_and_one_of_another_size_is_scaled(workdir, journal):
    root, cfg = workdir
    src = _drop(cfg, "m.png", png_bytes(size=(64, 48)))
    mask = cfg.paths.inbox / "m.mask.png"
    mask.write_bytes(png_bytes(size=(32, 32), color=(255, 255, 255)))
    _enqueue(journal, src)
    out = _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()]))
    assert out.status == "failed"
    assert "m.mask.png is 32×32, another shape than m.png (64×48 upright)" in out.error
    assert sorted(p.name for p in cfg.paths.failed.iterdir()) == ["m.mask.png", "m.png", "m.png.error.json"]

    small = _drop(cfg, "s.png", png_bytes(size=(64, 48), seed=9))
    (cfg.paths.inbox / "s.mask.png").write_bytes(png_bytes(size=(32, 24), color=(255, 255, 255)))
    _enqueue(journal, small)
    assert _run_next(journal, Runner(journal, lambda: cfg, [CopyStage()])).status == "done"
