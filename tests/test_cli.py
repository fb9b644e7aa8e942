"""The polishd command as users type it: process, status, retry, check-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from daemon import config as config_mod
from daemon.journal import Journal
from tests.conftest import DATA, REPO, png_bytes, write_config


def polishd(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.helpers.run_polishd", "--", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def test_process_leaves_inputs_summarises_and_fails_loudly(tmp_path):
    config = write_config(tmp_path)
    src = tmp_path / "batch"
    src.mkdir()
    (src / "one.png").write_bytes((DATA / "astronaut.png").read_bytes())
    (src / "two.png").write_bytes(png_bytes(seed=4))
    ok = polishd("--config", str(config), "process", str(src))
    assert ok.returncode == 0, ok.stderr
    assert "one.png: done" in ok.stdout and "two.png: done" in ok.stdout
    assert "sleep: done" in ok.stdout and "16-copy.png" in ok.stdout
    assert "2 images" in ok.stdout and "2 done" in ok.stdout and "0 failed" in ok.stdout
    assert sorted(p.name for p in src.iterdir()) == ["one.png", "two.png"]  # inputs stay
    assert len(list((tmp_path / "archive").iterdir())) == 2

    (src / "bad.png").write_bytes(b"definitely not a png")
    bad = polishd("--config", str(config), "process", str(src / "bad.png"))
    assert bad.returncode == 1
    assert "bad.png: failed" in bad.stdout and "not a PNG, JPEG or WebP" in bad.stdout
    assert (src / "bad.png").read_bytes() == b"definitely not a png"


def test_status_json_counts_and_recent_failures(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "x.png").write_bytes(b"junk")
    polishd("--config", str(config), "process", str(tmp_path / "x.png"))
    polishd("--config", str(config), "process", str(DATA / "camera.png"))
    out = polishd("--config", str(config), "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["counts"]["done"] == 1 and data["counts"]["failed"] == 1
    assert data["finished_last_hour"] == 1
    (failure,) = data["recent_failures"]
    assert failure["name"] == "x.png" and failure["stage"] == "intake" and "InputError" in failure["error"]
    human = polishd("--config", str(config), "status")
    assert "done 1" in human.stdout and "x.png [intake]" in human.stdout


def test_retry_moves_a_failed_image_back_to_the_inbox(tmp_path, workdir):
    root, cfg = workdir
    import hashlib

    from daemon.journal import Journal
    from daemon.runner import Runner

    journal = Journal(cfg.paths.state / "journal.sqlite3")
    src = cfg.paths.inbox / "flaky.png"
    src.write_bytes(png_bytes(seed=8))
    (cfg.paths.inbox / "flaky.toml").write_text("[upscale]\nscale = 2\n")  # its settings travel with it
    (cfg.paths.inbox / "flaky.mask.png").write_bytes(png_bytes(seed=9))
    journal.enqueue(src, hashlib.sha256(src.read_bytes()).hexdigest(), 1, 0.0)
    from tests.helpers.toy_stages import BoomStage
    runner = Runner(journal, lambda: cfg, [BoomStage()])
    for _ in range(3):
        runner.run_job(journal.claim())
    assert (cfg.paths.failed / "flaky.png").exists()
    out = polishd("--config", str(root / "pipeline.toml"), "retry", "--failed")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in cfg.paths.inbox.iterdir()) == ["flaky.mask.png", "flaky.png", "flaky.toml"]
    assert (cfg.paths.inbox / "flaky.toml").read_text() == "[upscale]\nscale = 2\n"
    assert sorted(p.name for p in cfg.paths.failed.iterdir()) == ["flaky.png.error.json.retried"]  # no orphans
    job = journal.jobs()[0]
    assert job.state == "queued" and job.attempts == 0 and job.source == str(cfg.paths.inbox / "flaky.png")


def test_process_on_a_generators_output_tree_takes_the_images_of_its_date_folders_and_skips_the_rest(tmp_path):
    config = write_config(tmp_path)
    outputs = tmp_path / "outputs" / "txt2img-images"
    for day in ("2026-12-03", "2026-12-04"):
        (outputs / day).mkdir(parents=True)
        (outputs / day / f"00001-{day}.png").write_bytes(png_bytes(seed=len(day) + int(day[-1])))
    (outputs / "2026-12-04" / "grid-0001.png").write_bytes(png_bytes(seed=90))
    (outputs / "2026-12-04" / "ComfyUI_temp_abc_00001_.png").write_bytes(png_bytes(seed=91))
    (outputs / "2026-12-04" / "00002.png.part").write_bytes(b"half")
    out = polishd("--config", str(config), "process", str(tmp_path / "outputs"))
    assert out.returncode == 0, out.stderr
    assert "2 images" in out.stdout and "2 done" in out.stdout
    assert "00001-2026-12-03.png: done" in out.stdout and "00001-2026-12-04.png: done" in out.stdout
    assert "grid" not in out.stdout and "temp" not in out.stdout


def test_check_config_exit_codes(tmp_path):
    good = write_config(tmp_path)
    assert polishd("check-config", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[upscale]\nscale = 32\n")
    out = polishd("check-config", str(bad))
    assert out.returncode == 3 and "bad.toml: [upscale].scale must be 2–16 (got 32)" in out.stderr
    assert polishd("--config", str(bad), "status").returncode == 3


def test_check_config_names_a_missing_model_beside_another_tables_mistake_each_once(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[upscale]\nscale = 32\n[inpaint]\nmodel = "gone.safetensors"\n'
                   '[automask]\nface_model_short = "face_yolov8n.pt"\n')
    out = polishd("check-config", str(bad))
    lines = out.stderr.splitlines()
    assert out.returncode == 3 and "bad.toml: [upscale].scale must be 2–16 (got 32)" in lines
    assert sum("[inpaint].model = 'gone.safetensors': no such file" in line for line in lines) == 1
    assert sum("[automask].face_model_short = 'face_yolov8n.pt': no such file" in line for line in lines) == 1
    assert len(lines) == len(set(lines)) == 3


def test_global_options_go_before_or_after_the_command(tmp_path):
    config = write_config(tmp_path)
    src = tmp_path / "one.png"
    src.write_bytes(png_bytes(seed=31))
    after = polishd("process", "--config", str(config), "--log-format", "json", str(src))
    assert after.returncode == 0, after.stderr
    assert "one.png: done" in after.stdout
    status = polishd("status", "--config", str(config), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["counts"]["done"] == 1
    before = polishd("--config", str(config), "status", "--json")
    assert json.loads(before.stdout) == json.loads(status.stdout)
    missing = polishd("status", "--config", str(tmp_path / "nope.toml"))  # given after: still the one used
    assert missing.returncode == 3 and "nope.toml: no such file" in missing.stderr


def test_process_beside_a_daemon_on_the_same_bytes_keeps_one_archive(tmp_path, workdir):
    """The daemon is running these bytes: process waits for it, then records a duplicate, not a second folder."""
    import hashlib
    import threading

    from daemon.cli import main
    from daemon.journal import Journal
    from daemon.runner import Runner
    from tests.helpers.toy_stages import CopyStage

    root, cfg = workdir
    data = png_bytes(seed=61)
    (cfg.paths.inbox / "ws.png").write_bytes(data)
    elsewhere = tmp_path / "with space.png"
    elsewhere.write_bytes(data)
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    src = cfg.paths.inbox / "ws.png"
    journal.enqueue(src, hashlib.sha256(data).hexdigest(), len(data), src.stat().st_mtime)
    daemons_job = journal.claim()  # the daemon has taken it and is in its stages
    result = {}
    beside = threading.Thread(target=lambda: result.update(code=main(
        ["--config", str(root / "pipeline.toml"), "process", "--no-progress", str(elsewhere)], stages=[CopyStage()])))
    beside.start()
    beside.join(1.5)
    assert beside.is_alive()  # waiting, not processing the same bytes a second time
    Runner(journal, lambda: cfg, [CopyStage()]).run_job(daemons_job)
    beside.join(30)
    assert result["code"] == 0
    assert len([p for p in cfg.paths.archive.iterdir() if p.is_dir()]) == 1
    assert [j.state for j in journal.jobs()] == ["done", "duplicate"]


def _on_a_terminal(args: list[str], when: dict | None = None) -> str:
    """What a person sees: the command run with its stderr on a pseudo-terminal of 140 columns.
    ``when``: text seen → what to do then, once (drop a file, stop the daemon)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            out += chunk
            for seen, act in list((when or {}).items()):
                if seen.encode() in out:
                    del when[seen]
                    act(proc)
        elif proc.poll() is not None:
            break
    assert proc.wait(120) == 0
    os.close(master)
    return out.decode(errors="replace")


def test_process_shows_the_running_stage_and_its_tiles_on_a_terminal_and_nothing_elsewhere(tmp_path):
    config = write_config(tmp_path, '[automask]\nenabled = false\n[outpaint]\nenabled = false\n'
                                    '[upscale]\nmodel = "animevideov3"\nscale = 2\ntile = 64\nbackend = "torch"\n')
    src = tmp_path / "astronaut.png"
    from PIL import Image

    Image.open(DATA / "astronaut.png").crop((128, 0, 384, 256)).save(src)  # 256²: 16 tiles of 64
    seen = _on_a_terminal(["--config", str(config), "--log-level", "warning", "process", str(src)])
    assert "/16 tiles of 40-upscale.png" in seen, seen[-2000:]
    assert "astronaut-" in seen and "· contact" in seen and "astronaut.png: done" in seen
    assert "INFO:" not in seen and "W0000" not in seen  # no native lines on the screen
    plain = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), "--log-level", "warning",
                            "process", str(src)], cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert plain.returncode == 0 and "\r" not in plain.stderr and "image/s" not in plain.stderr
    assert plain.stdout.rstrip().endswith(f"archive: {tmp_path / 'archive'}; outbox: {tmp_path / 'var' / 'outbox'}")


def test_run_on_a_terminal_shows_the_running_stage_live_and_says_why_a_stage_is_skipped(tmp_path):
    import shutil
    import signal

    config = write_config(tmp_path, '[outpaint]\nenabled = false\n'
                                    '[upscale]\nmodel = "animevideov3"\nscale = 2\ntile = 64\nbackend = "torch"\n')
    config.write_text(config.read_text().replace('format = "json"\nlevel = "debug"', 'format = "auto"\nlevel = "info"'))
    from PIL import Image

    Image.open(DATA / "astronaut.png").crop((128, 0, 384, 256)).save(tmp_path / "astronaut.png")
    seen = _on_a_terminal(["--config", str(config), "run"], when={
        "watching": lambda proc: shutil.copy(tmp_path / "astronaut.png", tmp_path / "inbox"),
        "job finished": lambda proc: proc.send_signal(signal.SIGTERM)})
    assert "job started" in seen and "/16 tiles of 40-upscale.png · " in seen, seen[-3000:]
    assert seen.count("stage skipped") == 2  # inpaint (no model) and outpaint (disabled), each once
    assert "no inpainting model configured" in seen and "stopped" in seen


def _with_journal(tmp_path):
    config = write_config(tmp_path)
    Journal(config_mod.load(config).paths.state / "journal.sqlite3").close()
    return config


def test_run_without_a_config_names_the_option_and_the_demo_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "POLISHD_CONFIG"}
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "run"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={**env, "PYTHONPATH": str(REPO)})
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert f"no pipeline.toml in {tmp_path}" in out.stderr
    assert "--config FILE" in out.stderr and "--config examples/demo.toml run" in out.stderr
    named = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", "nowhere.toml", "run"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, env={**env, "PYTHONPATH": str(REPO)})
    assert named.returncode == 3 and "nowhere.toml: no such file" in named.stderr


def test_retry_of_a_job_that_is_not_there_names_it(tmp_path):
    config = _with_journal(tmp_path)
    out = polishd("--config", str(config), "retry", "99")
    assert out.returncode == 1 and "no job #99" in out.stderr and "Traceback" not in out.stderr


def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(tmp_path):
    config = write_config(tmp_path)
    for port in ("99999", "0", "http"):
        out = polishd("--config", str(config), "serve", "--port", port)
        assert out.returncode == 2 and "--port: must be" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_status_into_a_pipe_closed_early_ends_quietly(tmp_path):
    config = _with_journal(tmp_path)
    command = f"{sys.executable} -m daemon.cli --config {config} status --failures 50 | true"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_help_names_every_stage_the_exit_codes_and_what_each_argument_is():
    top = polishd("--help").stdout
    for word in ("inpaints", "outpaints", "delivers", "Exit status", "3 a config problem"):
        assert word in " ".join(top.split()), word
    assert "an image, or a folder" in polishd("process", "--help").stdout
    assert "the pipeline.toml to check" in polishd("check-config", "--help").stdout


def test_process_on_a_fifo_fails_it_by_name_instead_of_waiting_for_a_writer(tmp_path):
    config = write_config(tmp_path)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    out = polishd("--config", str(config), "--log-format", "console", "process", str(fifo))  # timeout: 120 s
    assert out.returncode == 1 and "pipe.png is a FIFO; polishd reads only regular files" in out.stdout
    assert fifo.exists()  # left where it is
