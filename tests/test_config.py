"""Configuration (SPEC §3): the example is complete and valid; bad configs exit 2 naming the key."""

from __future__ import annotations

import dataclasses
import re
import tomllib

import pytest
from conftest import REPO, Env

from logwatchd.config import SECTIONS, Config, load_config


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
