"""Imported by the forkserver only (`procs.context`): it dies with the process that started it."""

from .procs import die_with_parent

die_with_parent()
