"""The ``polishd`` command: argv → config → logging → signals → run → exit code."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from daemon import __version__, folders, logs, ops, webhooks
from daemon import config as config_mod
from daemon.archive import sha256_file
from daemon.config import Config, ConfigError, SourceConfig
from daemon.grouping import in_groups
from daemon.journal import Journal
from daemon.pipeline import default_stages
from daemon.runner import JobStatus, Runner
from daemon.service import AlreadyRunning, Daemon
from daemon.signals import Signals
from daemon.sources import walk
from daemon.worker import Worker, default_name, parse_device
from stages.base import Stage

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def _global_options(default) -> argparse.ArgumentParser:
    """Options that go before or after the command: ``polishd --config X process`` = ``polishd process --config X``.
    The commands' copies default to SUPPRESS, so a command never resets what was given before it."""
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("-c", "--config", metavar="FILE", default=default,
                   help=f"pipeline.toml to use (default: ${config_mod.CONFIG_ENV}, else ./pipeline.toml)")
    g.add_argument("--log-format", choices=["auto", "console", "json"], default=default,
                   help="override [log].format (auto: console on a terminal, JSON lines otherwise)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=default,
                   help="override [log].level")
    return g


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polishd", parents=[_global_options(None)],
        description="Finishes AI-generated images dropped into an inbox folder: auto-masks faces and hands, "
                    "inpaints them, outpaints aspect-ratio variants, upscales, delivers to an outbox, and "
                    "archives every stage with a manifest.",
        epilog="Exit status: 0 done, 1 an image or job failed (or another polishd runs on the same state), "
               "2 a usage or folder problem, 3 a config problem.")
    p.add_argument("--version", action="version", version=f"polishd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _global_options(argparse.SUPPRESS)
    real_add = sub.add_parser
    sub.add_parser = lambda *a, **k: real_add(*a, parents=[common], **k)  # every command takes them too

    sub.add_parser("run", help="watch the inbox and process what arrives (the daemon)",
                   description="Watch [paths].inbox, process each stable image through every enabled stage, "
                               "archive the results and remove it from the inbox. Stops cleanly on SIGTERM/SIGINT; "
                               "reloads pipeline.toml when it changes or on SIGHUP.")
    pw = sub.add_parser("worker", help="run jobs for a coordinator ([cluster].broker): one process per GPU",
                        description="A Celery worker for the coordinator that `polishd run` is when [cluster].broker "
                                    "is set. It runs one job at a time through every stage, keeps its models loaded "
                                    "between jobs, and writes the archive on the shared [paths]. Stops cleanly on "
                                    "SIGTERM/SIGINT: the running job finishes its stage's safe point and goes back.")
    pw.add_argument("--device", metavar="DEVICE",
                    help='auto, cpu, cuda, cuda:N (this process sees GPU N alone) or mps; default [daemon].device')
    pw.add_argument("--name", metavar="NAME", help="the name status shows (default: device-pid@host)")
    pp = sub.add_parser("process", help="process files or folders once, leaving them where they are",
                        description="Run the pipeline once on the given images (folders: the images in them and "
                                    "their subfolders, 8 levels down, without ComfyUI's temp previews, A1111's grids "
                                    "and partial files) into [paths].archive. Inputs are not moved or removed. Exit "
                                    "status 1 if any image did not finish.")
    pp.add_argument("paths", nargs="+", metavar="PATH", type=Path,
                    help="an image, or a folder: the images in it and its subfolders")
    pp.add_argument("--no-progress", action="store_true", help="no progress bar")

    ps = sub.add_parser("status", help="jobs by state, throughput, recent failures",
                        description="Show the journal: jobs by state, images finished in the last hour, "
                                    "and the most recent failures with their reasons.")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    ps.add_argument("--failures", type=int, default=10, metavar="N", help="how many recent failures (default 10)")

    pr = sub.add_parser("retry", help="put failed jobs back in the queue",
                        description="Move a failed image from [paths].failed back into the inbox and queue it "
                                    "again with its attempts reset.")
    g = pr.add_mutually_exclusive_group(required=True)
    g.add_argument("job", nargs="?", type=int, metavar="ID", help="job id (see polishd status)")
    g.add_argument("--failed", action="store_true", help="retry every failed job")

    pv = sub.add_parser("serve", help="the review page: approve, reject, retry (a process of its own)",
                        description="Serve the review page over the journal and the archive: a dashboard, a "
                                    "gallery by review state and each image's before and after. Binds to "
                                    "[review].host (loopback by default); any other address needs [review].token.")
    pv.add_argument("--host", help="address to listen on (default [review].host)")
    pv.add_argument("--port", type=_port, help="port, 1–65535 (default [review].port)")
    pi = sub.add_parser("inspect", help="show how an image was generated, as polishd reads it",
                        description="Read FILE's generation metadata (A1111, Forge, SD.Next, Civitai, Fooocus, "
                                    "SwarmUI, InvokeAI, NovelAI, ComfyUI) and print the record polishd repaints "
                                    "it with: prompt, negative, checkpoint and hash, VAE, LoRAs, embeddings, "
                                    "sampler, schedule, steps, CFG, seed, clip skip, size.")
    pi.add_argument("files", nargs="+", type=Path, metavar="FILE", help="an image")
    pi.add_argument("--json", action="store_true", help="machine-readable output")
    pc = sub.add_parser("check-config", help="validate a pipeline.toml and exit",
                        description="Parse and validate FILE (default: the --config file); print every problem.")
    pc.add_argument("file", nargs="?", type=Path, metavar="FILE",
                    help="the pipeline.toml to check (default: --config, else ./pipeline.toml)")
    return p


def _inspect(files: list[Path], as_json: bool) -> int:
    """Each file's generation record, for a person (or as JSON)."""
    from PIL import Image

    from stages import generation
    from stages.picture import opened_for_metadata
    from stages.records import to_json

    code, out = EXIT_OK, {}
    for path in files:
        try:
            with opened_for_metadata(path) as im:  # text past Pillow's bounds: read without it
                record = generation.read(im)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            print(f"polishd: {path}: cannot be read as an image ({exc})", file=sys.stderr)
            code = EXIT_USAGE
            continue
        out[str(path)] = to_json(record) if record is not None else None
        if not as_json:
            print(_describe(path, record))
    if as_json:
        print(json.dumps(out if len(files) > 1 else next(iter(out.values()), None), indent=2, ensure_ascii=False))
    return code


def _describe(path: Path, record) -> str:
    if record is None:
        return f"{path}: no generation metadata polishd can read"
    lines = [f"{path}: made with {record.tool}"]

    def line(label: str, value) -> None:
        if value not in (None, "", []):
            lines.append(f"  {label:<11} {value}")
    line("prompt", record.positive)
    line("negative", record.negative)
    line("checkpoint", record.checkpoint and record.checkpoint + (f" [{record.checkpoint_hash}]"
                                                                  if record.checkpoint_hash else ""))
    line("vae", record.vae)
    line("loras", ", ".join(f"{x.name} {x.weight:g}" + (f" (text encoder {x.te_weight:g})" if x.te_weight is not None
                                                        else "") for x in record.loras))
    line("embeddings", ", ".join(record.embeddings))
    line("sampler", " ".join(v for v in (record.sampler, record.schedule) if v))
    line("steps", record.steps)
    line("cfg", record.cfg if record.cfg is None else f"{record.cfg:g}")
    line("seed", record.seed)
    line("clip skip", record.clip_skip)
    line("size", record.size and "×".join(map(str, record.size)))
    return "\n".join(lines)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number 1–65535 (got {value!r})") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1–65535 (got {port})")
    return port


def main(argv: Sequence[str] | None = None, stages: list[Stage] | None = None) -> int:
    try:
        code = _main(argv, stages)
        sys.stdout.flush()  # here, not at exit: a closed pipe is met where it can be handled
        return code
    except BrokenPipeError:  # `polishd status | head -2`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes
        return EXIT_OK


def _main(argv: Sequence[str] | None, stages: list[Stage] | None) -> int:
    args = build_parser().parse_args(argv)
    config_path = config_mod.default_path(args.config)
    if args.command == "check-config":
        return _check_config(args.file or config_path)
    if args.command == "inspect":
        return _inspect(args.files, args.json)
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        if not os.path.exists(config_path) and args.config is None and not os.environ.get("POLISHD_CONFIG"):
            print(f"polishd: no pipeline.toml in {Path.cwd()}: name one with --config FILE (or $POLISHD_CONFIG); "
                  "to try polishd on its samples, from the checkout: polishd --config examples/demo.toml "
                  f"{args.command}", file=sys.stderr)
        else:
            print(f"polishd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "worker":

        try:
            _, visible = parse_device(args.device)
        except ValueError as exc:
            print(f"polishd: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if visible is not None:  # before anything imports torch
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if args.command in ("run", "process", "worker"):  # the commands that load native libraries
        logs.capture_native()
    logs.configure(args.log_level or cfg.log.level, args.log_format or cfg.log.format)
    try:
        return _command(args, config_path, cfg, stages)
    except folders.FolderProblem as exc:  # the user's to fix: one line, no traceback
        print(f"polishd: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _command(args: argparse.Namespace, config_path: Path, cfg: Config, stages: list[Stage] | None) -> int:
    if args.command == "serve":
        return _serve(cfg, args.host or cfg.review.host, args.port or cfg.review.port)
    if args.command in ("status", "retry"):
        folders.existing_state(cfg)
        try:
            if args.command == "status":
                return _status(cfg, args.json, args.failures)
            return _retry(cfg, args.job, args.failed)
        except sqlite3.OperationalError as exc:  # a journal in a folder polishd may not write (WAL needs to)
            raise folders.FolderProblem(f"the journal in [paths].state = {cfg.paths.state} cannot be opened "
                                        f"({exc}); give polishd write access to that folder") from None
    if args.command == "worker" and not cfg.cluster.enabled:
        raise folders.FolderProblem(f"{cfg.source.name if cfg.source else 'pipeline.toml'}: [cluster].broker is "
                                    "not set; a worker needs the coordinator's broker (see README.md, Scale out)")
    if args.command == "worker":
        folders.shared(cfg, ("inbox", "archive", "outbox"))
        folders.prepare(cfg, ("models",))
    else:
        folders.prepare(cfg, ("inbox", "archive", "failed", "state", "models", "outbox") if args.command == "run"
                        else ("archive", "state", "models", "outbox"))
    if stages is None:
        stages = default_stages()
        _warn_about_models(cfg)
    if args.command == "run":
        return _run(config_path, cfg, stages)
    if args.command == "worker":
        return _worker(cfg, stages, args.device, args.name)
    return _process(cfg, stages, args.paths, progress=not args.no_progress)


def _check_config(path: Path) -> int:
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        said = str(exc).splitlines()
        print("\n".join(said + [p for p in config_mod.problems_beside(path) if p not in said]), file=sys.stderr)
        return EXIT_CONFIG
    notes, unloadable = config_mod.checkpoint_report(cfg, path.name)
    detectors, broken = config_mod.detector_report(cfg, path.name)
    notes += detectors + config_mod.source_report(cfg, path.name)
    problems = config_mod.model_problems(cfg, path.name) + unloadable + broken + \
        config_mod.setting_problems(cfg, path.name)
    if notes:
        print("\n".join(notes))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: ok (inbox {cfg.paths.inbox}, archive {cfg.paths.archive})")
    return EXIT_OK


def _warn_about_models(cfg: Config) -> None:
    """A model setting that resolves to nothing does not stop the daemon: the stages that need it are
    skipped with the reason, and a model put in place later is picked up.  Say so once, at the start."""
    origin = cfg.source.name if cfg.source is not None else "pipeline.toml"
    log = structlog.get_logger("polishd")
    for problem in config_mod.model_problems(cfg, origin):
        log.warning("a model setting resolves to nothing; the stages that need it will be skipped", problem=problem)
    for problem in config_mod.setting_problems(cfg, origin):
        log.warning("a file a setting names is not there; what needs it fails, with the reason", problem=problem)
    for problem in config_mod.checkpoint_report(cfg, origin)[1]:
        log.warning("a checkpoint will not load; the stages that need it will be skipped", problem=problem)
    for problem in config_mod.detector_report(cfg, origin)[1]:
        log.warning("a YOLO detector cannot be used; detection goes on without it", problem=problem)


def _run(config_path: Path, cfg: Config, stages: list[Stage]) -> int:

    signals = Signals()
    signals.install()
    try:
        return Daemon(config_path, cfg, stages, signals).run()
    except AlreadyRunning as exc:
        structlog.get_logger("polishd").error(str(exc))
        return EXIT_FAILED


def _serve(cfg: Config, host: str, port: int) -> int:
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not cfg.review.token:
        print(f"polishd: serving on {host} needs [review].token: the page shows the team's unreleased images "
              "(set a token of 16+ characters, or keep [review].host on 127.0.0.1)", file=sys.stderr)
        return EXIT_USAGE
    folders.existing_state(cfg)
    from daemon.review.app import serve  # starlette and uvicorn: an import every other command need not pay

    structlog.get_logger("polishd.review").info("review page", url=f"http://{host}:{port}/",
                                                login=bool(cfg.review.token))
    return serve(cfg, host, port)


def _worker(cfg: Config, stages: list[Stage], device: str | None, name: str | None) -> int:

    chosen, _ = parse_device(device)  # CUDA_VISIBLE_DEVICES was set from it before anything imported torch
    return Worker(cfg, stages, chosen, name or default_name(device)).run()


# --------------------------------------------------------------------------- process


def _inputs(paths: list[Path]) -> list[Path]:
    """Files as given; a folder: the images in it and in its subfolders (a generator's date folders), walked
    as a watched tree is, ComfyUI's previews, grids and partial files left out."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(Path(found) for found, _ in walk(SourceConfig(path=str(p)))))
        else:
            out.append(p)
    return out


def _process(cfg: Config, stages: list[Stage], paths: list[Path], progress: bool) -> int:
    files = _inputs(paths)
    missing = [str(p) for p in files if not os.path.lexists(p)]
    if missing:
        print("polishd: no such file: " + ", ".join(missing), file=sys.stderr)
        return EXIT_USAGE
    if cfg.inpaint.model_from_image:
        files = in_groups(files)  # one checkpoint's images together: each loaded once
    journal = Journal(ops.journal_path(cfg))
    runner = Runner(journal, lambda: cfg, stages)
    bar = None
    if progress and sys.stderr.isatty():  # on a terminal only: nothing when stderr is a file or journald
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit="image", file=sys.stderr, dynamic_ncols=True)
        runner.progress = _show_stage(bar)
        logs.print_to(logs.AboveTheBar(bar, sys.stderr))
    outcomes = []
    t0 = time.monotonic()
    beating = _Heartbeat(journal, runner)
    for path in files:
        path = path.absolute()
        st = os.lstat(path)
        # only a regular file is read here: a FIFO would block; intake refuses the rest by name
        digest = sha256_file(path) if stat.S_ISREG(st.st_mode) else "not a regular file"
        job = _start(journal, path, digest, st)
        outcome = runner.run_job(job)
        while outcome.status == JobStatus.RETRY and (job := journal.claim_id(job.id)) is not None:
            outcome = runner.run_job(job)  # one-shot: the next attempt runs now, not later
        outcomes.append(outcome)
        if bar:
            bar.update(1)
            bar.set_postfix_str(f"{path.name}: {outcome.status}", refresh=True)
    beating.stop()
    if bar:
        bar.close()
        logs.print_to(sys.stderr)
    webhooks.send_once(cfg, journal, {o.job_id for o in outcomes})  # word back now; the rest waits for `run`
    for stage in stages:
        stage.close()
    for o in outcomes:
        print(_summary(o))
    counts = {s: sum(o.status == s for o in outcomes) for s in JobStatus}
    unfinished = len(outcomes) - counts[JobStatus.DONE] - counts[JobStatus.DUPLICATE]
    other = unfinished - counts[JobStatus.FAILED]
    print(f"{len(outcomes)} images in {time.monotonic() - t0:.1f} s: {counts[JobStatus.DONE]} done, "
          f"{counts[JobStatus.DUPLICATE]} duplicates, {counts[JobStatus.FAILED]} failed"
          + (f", {other} not finished" if other else "") + f"; archive: {cfg.paths.archive}"
          + (f"; outbox: {cfg.paths.outbox}" if cfg.deliver.enabled and any(s.name == "deliver" for s in stages)
             else ""))
    return EXIT_FAILED if unfinished else EXIT_OK


def _show_stage(bar):
    """The progress bar's tail: the image, the stage that is running and how far it is."""
    state = {"stage": "", "at": 0.0}

    def show(stage: str, done: int, total: int, unit: str) -> None:
        if not stage:  # the job is over: the bar's own line says so
            return
        now = time.monotonic()
        if stage == state["stage"] and total and done < total and now - state["at"] < 0.2:
            return  # at most five updates a second
        state.update(stage=stage, at=now)
        name = structlog.contextvars.get_contextvars().get("image", "")
        bar.set_postfix_str(f"{name} · {stage}" + (f" {done}/{total} {unit}" if total else ""), refresh=True)
    return show


def _start(journal: Journal, path: Path, digest: str, st: os.stat_result):
    """This file's job, once no daemon is running the same bytes (then the duplicates rule applies)."""
    waited = False
    while (job := journal.start_direct(path, digest, st.st_size, st.st_mtime)) is None:
        if not waited:
            structlog.get_logger("polishd").info("the daemon is processing the same bytes; waiting for it",
                                                 path=str(path))
            waited = True
        time.sleep(0.5)
    return job


class _Heartbeat:
    """Keeps this process's running job fresh in the journal, so a daemon starting meanwhile leaves it be."""

    def __init__(self, journal: Journal, runner, every: float = 10.0):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(journal.path, runner, every), daemon=True)
        self._thread.start()

    def _loop(self, path: Path, runner, every: float) -> None:
        journal = Journal(path)  # a connection of its own: this is another thread
        while not self._stop.wait(every):
            journal.heartbeat(sorted(runner.active))
        journal.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _summary(o) -> str:
    lines = [f"{o.name}: {o.status} in {o.seconds:.1f} s" + (f" — {o.error}" if o.error else "")]
    if o.archive:
        lines.append(f"  archive: {o.archive}")
    for s in o.stages:
        what = ", ".join(s.outputs) or s.reason
        took = f" ({s.duration_s:.1f} s)" if s.duration_s is not None else ""
        lines.append(f"  {s.name}: {s.status}{took} {what}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- status / retry


def _status(cfg: Config, as_json: bool, failures: int) -> int:
    data = ops.status_data(cfg, failures)
    if as_json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    c = data["counts"]
    if data["paused"]:
        print(f"paused: {data['paused']}")
    counts = [f"{k} {v}" for k, v in c.items()]
    if "cluster" in data and data["cluster"]["waiting_for_worker"]:  # "running" here is sent to the broker
        counts[list(c).index("running")] = (f"running {c['running'] - data['cluster']['waiting_for_worker']} "
                                            f"(and {data['cluster']['waiting_for_worker']} sent to the broker, "
                                            "waiting for a worker)")
    print("jobs: " + ", ".join(counts))
    print(f"finished in the last hour: {data['finished_last_hour']}")
    for w in data["waiting"]:
        print(f"waiting ({w['reason']}): {w['source']}")
    for s in data["sources"]:
        print(f"source {s['name']} ({s['mode']}, {s['path']}): {s['state']}; {s['known']} files known, "
              f"{s['queued']} queued, {s['done']} done, {s['failed']} failed")
    for w in data["webhooks"]:
        trouble = f"; {w['failing']} failing ({w['last_error']})" if w["failing"] else ""
        print(f"webhook {w['url']}: {w['delivered']} delivered in 24 h, {w['waiting']} waiting{trouble}"
              + (f", {w['gave_up']} given up" if w["gave_up"] else ""))
    if "cluster" in data:
        _print_cluster(data["cluster"])
    if data["needs_review"]["count"]:
        print(f"needs review: {data['needs_review']['count']}")
        for j in data["needs_review"]["images"]:
            print(f"  #{j['id']} {j['name']} ({j['archive']}): " + "; ".join(j["reasons"]))
    if data["recent_failures"]:
        print("recent failures:")
        for f in data["recent_failures"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f["finished"] or 0))
            print(f"  #{f['id']} {f['name']} [{f['stage']}] {when}: {f['error']}")
    return EXIT_OK


def _print_cluster(c: dict) -> None:
    if not c["reachable"]:
        print(f"broker: {c['broker']} is out of reach ({c['error']})")
    else:
        print(f"broker: {c['broker']}, queue {c['queue']}: {c['queue_length']} waiting")
    if c.get("note"):
        print(f"coordinator: broker {c['note']}")
    print(f"workers: {len(c['workers'])}")
    for w in c["workers"]:
        job = f"job #{w['job']} {w['image']}" if w["job"] is not None else w["state"]
        print(f"  {w['name']} [{w['device']}] {job}; {w['jobs_done']} done; heartbeat {w['last_heartbeat_s']} s ago")


def _retry(cfg: Config, job_id: int | None, all_failed: bool) -> int:
    journal = Journal(ops.journal_path(cfg))
    jobs = journal.jobs("failed") if all_failed else [j for j in [journal.get(job_id)] if j]
    if not jobs:
        print(f"polishd: no job #{job_id} (polishd status lists the failed ones)" if not all_failed
              else "no failed jobs", file=sys.stderr)
        return EXIT_FAILED if not all_failed else EXIT_OK
    status = EXIT_OK
    for job in jobs:
        ok, message = ops.retry_one(cfg, journal, job)
        print(message, file=sys.stdout if ok else sys.stderr)
        status = status if ok else EXIT_FAILED
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
