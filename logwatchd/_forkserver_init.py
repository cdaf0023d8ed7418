"""Imported by the forkserver only (`procs.context`): it dies with the process that started
it, and never of a stop signal meant for that process (its children's exit statuses would
be lost with it)."""

from .procs import die_with_parent, ignore_stop_signals

die_with_parent()
ignore_stop_signals()
