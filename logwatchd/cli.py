"""The `logwatchd` command: argument parsing, then a call into the modules; exit codes live here.

Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error; `status` also
3 (not running).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import __version__, logs
from .config import Config, load_config, to_toml
from .errors import ConfigError, Disposition, LedgerError, classify

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="CONFIG",
                   help="config file (default: $LOGWATCHD_CONFIG, else /etc/logwatchd/config.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logwatchd",
        description="Turns files of JSON log records dropped into an inbox into a "
                    "Hive-partitioned Parquet dataset, exactly once.")
    parser.add_argument("--version", action="version", version=f"logwatchd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="the daemon, in the foreground (what systemd runs)",
                       description="Watches the inbox and processes every file that lands in it, "
                                   "serves the HTTP endpoint and compacts on a schedule, until "
                                   "SIGTERM or SIGINT.")
    _add_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("process", help="process files once, print one JSON summary line per file",
                       description="Processes the files once, with the same outputs, ledger and "
                                   "dedupe as the daemon; files outside the inbox stay where they are.")
    _add_config(p)
    p.add_argument("--dry-run", action="store_true",
                   help="validate only: write nothing, record nothing; per file the counts by "
                        "reason and the first examples of each (exit 1 when a file would be "
                        "quarantined or cannot be read)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("status", help="health, backlog, today's files and records, recent problems",
                       description="The status page's picture in a terminal: from the running "
                                   "daemon's endpoint when it answers, else from the ledger opened "
                                   "read-only (the output says which). A table on a terminal, one "
                                   "JSON object otherwise. Exit 0 healthy, 1 unhealthy, 3 not running.")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="one JSON object, also on a terminal")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("compact", help="one compaction pass now",
                       description="Merges the small Parquet files of every partition (or of one "
                                   "date) into files of up to compaction.target_file_bytes.")
    _add_config(p)
    p.add_argument("--date", metavar="YYYY-MM-DD", help="compact only this partition")
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("check-config", help="validate the config, print the effective config as TOML",
                       description="Validates the config and prints the effective config (defaults "
                                   "filled in, paths resolved) as TOML. Exit 2 when it is invalid.")
    _add_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("replay", help="move quarantined or dead-lettered files back into the inbox",
                       description="Moves the named (or all) files of quarantine or dead-letter "
                                   "back into the inbox for another try; their reason files are removed.")
    _add_config(p)
    p.add_argument("source", choices=["quarantine", "dead-letter"])
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("rebuild-ledger", help="rebuild a lost or corrupt ledger from the outputs",
                       description="Rebuilds the ledger from the dataset, the error files and the "
                                   "archive (every output records the SHA-256 of its input). The "
                                   "old ledger, if any, is kept beside it with a .broken suffix.")
    _add_config(p)
    p.set_defaults(func=cmd_rebuild_ledger)

    p = sub.add_parser("verify", help="offline check of ledger, dataset and archive against each other",
                       description="Checks, without writing or locking anything, that every live "
                                   "output of the ledger is on disk with its size and rows, that no "
                                   "data file is unlisted, no staging file or journal entry is left, "
                                   "that the per-day counts and the record counters match the "
                                   "dataset, and that every archived input is known to the ledger. "
                                   "Exit 0 when all agree, 1 with one problem per line.")
    _add_config(p)
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"ok": ..., "problems": [{"kind", "detail", "path"}]}')
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[Any], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"logwatchd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerError as exc:
        print(f"logwatchd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM during `process`: the file in hand is abandoned as for Ctrl-C, its staged
    outputs dropped, and the command exits 143."""


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    sys.stdout.write(to_toml(config))
    return EXIT_OK


def cmd_process(args: argparse.Namespace) -> int:
    if args.dry_run:
        return cmd_dry_run(args)
    from .parallel import PoolRunner
    from .pipeline import Pipeline
    from .progress import FileProgress
    from .runtime import open_runtime

    config = _config(args)
    logs.configure(config.logging.level, config.logging.format, stream=sys.stderr)
    log = logs.get_logger()
    rt = open_runtime(config)
    workers = config.ingest.workers or os.cpu_count() or 1
    if workers > 1:
        from .procs import start_forkserver

        start_forkserver()  # from the main thread: the workers die with this process
    pipeline = Pipeline(config, rt.ledger, pool=PoolRunner(workers) if workers > 1 else None)

    def terminate(_signum: int, _frame: Any) -> None:
        pipeline.cancel.set()  # the worker processes are killed, not drained
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    # A bar on stderr only for a person at a terminal: never in a pipe or a log.
    show_progress = sys.stdout.isatty() and sys.stderr.isatty()
    status = EXIT_OK
    try:
        for name in args.files:
            path = Path(name)
            try:
                with FileProgress.for_file(path, show_progress) as bar:
                    pipeline.watch = bar.update if bar is not None else None
                    outcome = pipeline.process(path)
            except Exception as exc:  # noqa: BLE001 - classified in errors.py, like the daemon's
                outcome = _failed_outcome(path, exc, log)
            if outcome.status == "failed":
                status = EXIT_FAILURE
            sys.stdout.buffer.write(orjson.dumps(outcome.summary()) + b"\n")
            sys.stdout.flush()
    finally:
        pipeline.close()
        rt.close()
    return status


def _failed_outcome(path: Path, exc: Exception, log: Any) -> Any:
    """A failure as `process` reports it: the daemon's classification, without its retries
    (a one-shot command does not wait: a transient failure is `failed`, try again later)."""
    from .layout import display_name
    from .pipeline import FileOutcome

    name = display_name(path.name)
    disposition = classify(exc, path)
    if disposition is Disposition.VANISHED and not os.path.lexists(path):
        return FileOutcome(name, "failed", reason="not_found", detail=f"no such file: {name}")
    if disposition in (Disposition.PAUSE, Disposition.RETRY):
        return FileOutcome(name, "failed", reason="io_error", detail=display_name(str(exc) or repr(exc)))
    log.error(logs.INTERNAL_ERROR, file=name, error=repr(exc), traceback=traceback.format_exc())
    return FileOutcome(name, "failed", reason="internal_error", detail=display_name(repr(exc)))


def cmd_dry_run(args: argparse.Namespace) -> int:
    from .config import DEFAULT_CONFIG_PATH, parse_config
    from .dryrun import dry_run

    if args.config is None and "LOGWATCHD_CONFIG" not in os.environ and not DEFAULT_CONFIG_PATH.exists():
        # A producer's machine has no logwatchd config: check against the defaults.
        print(f"logwatchd: no config (-c, $LOGWATCHD_CONFIG, {DEFAULT_CONFIG_PATH}): checking "
              "against the default settings", file=sys.stderr)
        config = parse_config({}, base_dir=Path.cwd())
    else:
        config = _config(args)
    status = EXIT_OK
    for name in args.files:
        report = dry_run(config, Path(name))
        if report["status"] != "ok":
            status = EXIT_FAILURE
        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
        sys.stdout.flush()
    return status


def cmd_status(args: argparse.Namespace) -> int:
    from .status import gather, render_text

    report = gather(_config(args))
    if args.json or not sys.stdout.isatty():
        sys.stdout.buffer.write(orjson.dumps(report.body) + b"\n")
    else:
        sys.stdout.write(render_text(report.body))
    return report.exit_code


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import run_daemon

    return run_daemon(_config(args))


def cmd_compact(args: argparse.Namespace) -> int:
    from .compaction import cli_compact

    return cli_compact(_config(args), args.date)


def cmd_replay(args: argparse.Namespace) -> int:
    from .layout import display_name
    from .replay import BadName, ReplayError, replay

    config = _config(args)
    status = EXIT_OK
    try:
        for r in replay(config, args.source, args.names):
            if r.target is None:
                print(f"logwatchd: {display_name(r.name)}: {r.problem}", file=sys.stderr)
                status = EXIT_FAILURE
                continue
            sys.stdout.buffer.write(orjson.dumps({"file": display_name(r.name), "from": args.source,
                                                  "to": display_name(str(r.target))}) + b"\n")
            sys.stdout.flush()
    except BadName as exc:
        print(f"logwatchd: replay: {display_name(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except ReplayError as exc:
        print(f"logwatchd: replay: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return status


def cmd_rebuild_ledger(args: argparse.Namespace) -> int:
    from .rebuild import rebuild_ledger

    return rebuild_ledger(_config(args))


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    problems = verify(_config(args))
    if args.json:
        body = {"ok": not problems, "problems": [p.as_dict() for p in problems]}
        sys.stdout.buffer.write(orjson.dumps(body) + b"\n")
    else:
        for p in problems:
            sys.stdout.write(p.line().replace("\n", "\\n") + "\n")
    return EXIT_FAILURE if problems else EXIT_OK
