"""Configuration (SPEC §3): the example is complete and valid; bad configs exit 2 naming the key."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, Env

from logwatchd.config import SECTIONS, Config, load_config
from logwatchd.errors import ConfigError


def test_example_config_loads_and_documents_every_key() -> None:
    """config.example.toml is valid, lists every key of every section, and only defaults."""
    example = REPO / "config.example.toml"
    config = load_config(example)
    raw = tomllib.loads(example.read_text())
    for name, cls in SECTIONS.items():
        keys = {f.name for f in dataclasses.fields(cls)}
        assert set(raw[name]) == keys, f"[{name}] in the example differs from the config keys"
        default = cls()
        for key in keys:
            if name != "paths":
                assert getattr(getattr(config, name), key) == getattr(default, key), f"{name}.{key}"
    assert config.paths.inbox == REPO / "var" / "inbox"


def test_every_key_is_in_the_readme() -> None:
    """The README's config reference names every key."""
    readme = (REPO / "README.md").read_text()
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert re.search(rf"`{name}\.{f.name}`", readme), f"{name}.{f.name} missing from README"


@pytest.mark.parametrize("toml, key", [
    ("[ingest]\nsettle_secs = 1\n", "ingest.settle_secs"),
    ("[bogus]\nx = 1\n", "bogus"),
    ("[ingest]\nmax_attempts = 0\n", "ingest.max_attempts"),
    ("[ingest]\nmax_attempts = true\n", "ingest.max_attempts"),
    ("[ingest]\ndedupe = \"yes\"\n", "ingest.dedupe"),
    ("[ingest]\npatterns = []\n", "ingest.patterns"),
    ("[transform]\ntimezone = \"Mars/Olympus\"\n", "transform.timezone"),
    ("[api]\nlisten = \"localhost\"\n", "api.listen"),
    ("[api]\nlisten = \"0.0.0.0:8080\"\n", "api.listen"),
    ("[api]\nlisten = \"[::]:8080\"\n", "api.listen"),
    ("[api]\nlisten = \"example.com:8080\"\n", "api.listen"),
    ("[ingest]\npatterns = [\"../*.json\"]\n", "ingest.patterns"),
    ("[metrics]\nalert_error_ratio = 1.5\n", "metrics.alert_error_ratio"),
    ("[logging]\nformat = \"xml\"\n", "logging.format"),
    ("[paths]\ninbox = 3\n", "paths.inbox"),
])
def test_bad_config_exits_2_naming_the_key(env: Env, toml: str, key: str) -> None:
    """Unknown keys and bad values: exit code 2 and a message on stderr that names the key."""
    env.config.write_text(toml)
    proc = env.cli("check-config", check=False)
    assert proc.returncode == 2
    assert key in proc.stderr and proc.stdout == ""


def test_unparseable_toml_and_missing_file_exit_2(env: Env) -> None:
    """A TOML syntax error or a missing config file is a config error too."""
    env.config.write_text("[paths\n")
    assert env.cli("check-config", check=False).returncode == 2
    proc = env.cli("check-config", "-c", str(env.base / "nope.toml"), check=False)
    assert proc.returncode == 2 and "nope.toml" in proc.stderr


def test_check_config_prints_effective_config_that_loads_again(env: Env) -> None:
    """check-config prints every key as TOML, paths resolved, and that output is itself valid."""
    env.config.write_text('[paths]\nroot = "data"\narchive = ""\n[transform]\ntimezone = "Europe/Berlin"\n')
    out = env.cli("check-config").stdout
    doc = tomllib.loads(out)
    assert doc["paths"]["inbox"] == str(env.base / "data" / "inbox")
    assert doc["paths"]["archive"] == ""
    assert doc["transform"]["timezone"] == "Europe/Berlin"
    again = env.base / "again.toml"
    again.write_text(out)
    assert load_config(again).paths.archive is None


def test_config_from_environment_variable(env: Env) -> None:
    """Without -c the config is $LOGWATCHD_CONFIG."""
    import os
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "logwatchd", "check-config"], capture_output=True, check=False,
                          text=True, env=os.environ | {"LOGWATCHD_CONFIG": str(env.config)})
    assert proc.returncode == 0 and str(env.root) in proc.stdout


def test_help_lists_every_command() -> None:
    """`logwatchd --help` names every subcommand, and each subcommand has --help."""
    import subprocess
    import sys

    from logwatchd.cli import build_parser
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    out = subprocess.run([sys.executable, "-m", "logwatchd", "--help"], capture_output=True, check=False, text=True).stdout
    for cmd in commands:
        assert cmd in out
        sub = subprocess.run([sys.executable, "-m", "logwatchd", cmd, "--help"], capture_output=True, check=False, text=True)
        assert sub.returncode == 0 and "usage" in sub.stdout
    readme = (REPO / "README.md").read_text()
    for cmd in commands:
        assert f"logwatchd {cmd}" in readme, f"README does not document `logwatchd {cmd}`"


def test_defaults_without_any_table() -> None:
    """An empty config is valid: every key has a default."""
    from pathlib import Path

    from logwatchd.config import parse_config
    c = parse_config({}, base_dir=Path("/x"))
    assert isinstance(c, Config) and c.paths.root == Path("/x/var") and c.ingest.max_line_bytes == 1048576


def _numeric_keys() -> list[tuple[str, str, type]]:
    """(section, key, int or float) of every numeric key of every section."""
    out = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if type(f.default) in (int, float):
                out.append((name, f.name, type(f.default)))
    return out


# TOML spellings of values no key may take: the largest TOML integer, a negative number,
# and for floats a huge one, the infinities and NaN.
OUT_OF_RANGE = {int: ("9223372036854775807", "-1"),
                float: ("1e300", "9223372036854775807", "-1.0", "inf", "-inf", "nan")}


@pytest.mark.parametrize("section, key, value", [
    (section, key, value) for section, key, kind in _numeric_keys() for value in OUT_OF_RANGE[kind]])
def test_every_numeric_key_has_a_range(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       section: str, key: str, value: str) -> None:
    """Every number in the config (a key added later too) refuses huge, negative and non-finite values: exit 2 naming it."""
    from logwatchd.cli import main

    config = tmp_path / "config.toml"
    config.write_text(f"[{section}]\n{key} = {value}\n")
    assert main(["check-config", "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    assert f"{section}.{key}:" in err and out == ""


def test_every_numeric_key_documents_its_range() -> None:
    """Each numeric key carries an explicit [min, max] that holds its default, shown in the example config."""
    example: dict[str, str] = {}
    section = ""
    for line in (REPO / "config.example.toml").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            example[f"{section}.{line.split('=')[0].strip()}"] = line
    assert len(_numeric_keys()) >= 15
    for section, key, _kind in _numeric_keys():
        f = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
        lo, hi = f.metadata["range"]
        assert lo <= f.default <= hi, f"{section}.{key}"
        assert re.search(r"# \[[^]]+, [^]]+\]", example[f"{section}.{key}"]), f"{section}.{key} range not in the example"


@pytest.mark.parametrize("toml, key", [
    ("[compaction]\ninterval_seconds = 1e12\n", "compaction.interval_seconds"),
    ("[metrics]\ninterval_seconds = 1e12\n", "metrics.interval_seconds"),
    ("[ingest]\nworkers = 100000\n", "ingest.workers"),
])
def test_run_refuses_out_of_range_numbers_with_exit_2(env: Env, toml: str, key: str) -> None:
    """`run` with an interval the scheduler cannot hold exits 2 naming the key, instead of crashing."""
    env.config.write_text(toml)
    proc = env.cli("run", check=False, timeout=60)
    assert proc.returncode == 2 and key in proc.stderr and "Traceback" not in proc.stderr
    assert not env.root.exists()


UNUSABLE_ZONES = ["posix/Europe/Berlin", "right/UTC", "right/Europe/Berlin", "Factory",
                  "posixrules", "localtime", "Europe/../UTC", ""]


@pytest.mark.parametrize("zone", UNUSABLE_ZONES)
def test_unusable_time_zones_are_refused(env: Env, zone: str) -> None:
    """Zone files that are not canonical IANA zones (posix/, right/, Factory, ...) are config errors."""
    env.config.write_text(f'[transform]\ntimezone = "{zone}"\n')
    proc = env.cli("check-config", check=False)
    assert proc.returncode == 2 and "transform.timezone" in proc.stderr


@pytest.mark.parametrize("zone", ["posix/Europe/Berlin", "right/UTC", "Factory"])
def test_run_with_an_unusable_zone_exits_2_and_never_starts(env: Env, zone: str) -> None:
    """`run` refuses such a zone before anything starts: exit 2, not a crash in the warm-up."""
    env.config.write_text(f'[paths]\nroot = "var"\n[api]\nenabled = false\n[transform]\ntimezone = "{zone}"\n')
    proc = env.cli("run", check=False, timeout=60)
    assert proc.returncode == 2 and "transform.timezone" in proc.stderr
    assert "Traceback" not in proc.stderr and "daemon_started" not in proc.stdout


def test_every_accepted_zone_transforms_records() -> None:
    """Every zone of the system's database that the config accepts also works in the record path."""
    import zoneinfo

    from logwatchd.config import parse_config
    from logwatchd.records import warm_up
    accepted = []
    for zone in sorted(zoneinfo.available_timezones()):
        try:
            parse_config({"transform": {"timezone": zone}}, base_dir=Path("/x"))
        except ConfigError:
            continue
        accepted.append(zone)
        warm_up(zone)
    assert {"UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5"} <= set(accepted)


def test_a_zone_the_record_path_cannot_use_is_a_config_error_at_start(env: Env) -> None:
    """A zone that passes validation but fails the warm-up: `run` exits 2 with startup_failed, never READY."""
    zones = env.base / "zones"
    (zones / "Mars").mkdir(parents=True)
    (zones / "Mars" / "Olympus").write_bytes(Path("/usr/share/zoneinfo/UTC").read_bytes())
    env.config.write_text('[paths]\nroot = "var"\n[api]\nenabled = false\n'
                          '[transform]\ntimezone = "Mars/Olympus"\n')
    extra = os.environ | {"PYTHONTZPATH": str(zones)}  # zoneinfo knows it, pyarrow does not
    assert env.cli("check-config", check=False, env=extra).returncode == 0
    proc = env.cli("run", check=False, timeout=60, env=extra)
    assert proc.returncode == 2 and "transform.timezone" in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "startup_failed" in [e["event"] for e in events]
    assert "daemon_started" not in [e["event"] for e in events]


PATH_KEYS = ("inbox", "clean", "errors", "quarantine", "dead_letter", "archive", "state")


@pytest.mark.parametrize("paths", [
    {"quarantine": "inbox"},
    {"clean": "errors"},
    {"inbox": "clean/incoming"},
    {"inbox": "errors/in"},
    {"inbox": "quarantine/in"},
    {"inbox": "dead-letter/in"},
    {"inbox": "archive/in"},
    {"inbox": "state/in"},
    {"errors": "clean/errors"},
    {"archive": "inbox/done"},
    {"inbox": "."},
    {"state": "/ABS/var/clean"},
    {"dead_letter": "./quarantine/../quarantine"},
])
def test_overlapping_paths_are_refused_naming_both_keys(env: Env, paths: dict[str, str]) -> None:
    """Two directories that are the same, or one inside another, are refused by check-config and run."""
    table = {k: v.replace("/ABS", str(env.base)) for k, v in paths.items()}
    text = '[paths]\nroot = "var"\n' + "".join(f'{k} = "{v}"\n' for k, v in table.items())
    env.config.write_text(text + "[api]\nenabled = false\n")
    for command in ("check-config", "run"):
        proc = env.cli(command, check=False, timeout=60)
        assert proc.returncode == 2, proc.stderr
        named = [k for k in PATH_KEYS if f"paths.{k}" in proc.stderr]
        assert len(named) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not env.root.exists()


def test_overlap_through_a_symlink_is_refused(env: Env) -> None:
    """Paths are compared resolved: a symlink to the inbox used as quarantine is the same directory."""
    (env.root / "inbox").mkdir(parents=True)
    (env.base / "q").symlink_to(env.root / "inbox")
    env.config.write_text(f'[paths]\nroot = "var"\nquarantine = "{env.base / "q"}"\n')
    proc = env.cli("check-config", check=False)
    assert proc.returncode == 2 and "paths.inbox" in proc.stderr and "paths.quarantine" in proc.stderr


@pytest.mark.parametrize("key", ["archive", "quarantine", "dead_letter"])
def test_a_folder_on_another_filesystem_than_the_inbox_is_refused(env: Env, key: str) -> None:
    """Inbox files move into archive, quarantine and dead-letter by rename: one of them on
    another filesystem is refused by check-config and run (exit 2, naming both keys), not
    met as EXDEV after a commit, which would block every later start."""
    other = env.base / "other"
    other.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(other)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.strip()}")
    try:
        env.config.write_text(f'[paths]\nroot = "var"\n{key} = "{other / "d"}"\n[api]\nenabled = false\n')
        for command in ("check-config", "run"):
            proc = env.cli(command, check=False, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert "paths.inbox" in proc.stderr and f"paths.{key}" in proc.stderr, proc.stderr
            assert "different filesystems" in proc.stderr and "Traceback" not in proc.stderr
        env.config.write_text(f'[paths]\nroot = "var"\n{key} = "{env.base / "same" / "d"}"\n')
        assert env.cli("check-config", check=False).returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(other)], check=False)


def test_root_holding_every_directory_and_no_archive_are_fine(env: Env) -> None:
    """The default layout under root, absolute siblings, and archive = "" (none) are accepted."""
    env.config.write_text(f'[paths]\nroot = "var"\narchive = ""\ninbox = "{env.base / "in"}"\n'
                          'clean = "data/clean"\nerrors = "data/errors"\n')
    assert env.cli("check-config", check=False).returncode == 0
    env.config.write_text('[paths]\nroot = "var"\n')
    assert env.cli("check-config", check=False).returncode == 0


def test_config_that_is_not_utf8_is_a_config_error(env: Env) -> None:
    """A config file with invalid UTF-8 exits 2 with a message, not a traceback."""
    env.config.write_bytes(b'[logging]\nlevel = "\xff"\n')
    proc = env.cli("check-config", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(env.config) in proc.stderr
