"""The C part of the record path (logwatchd/_scan.c); everything else is in pyproject.toml.

It is optional: without a C compiler the package installs without it and the record path
runs in Python alone (same results, about half the throughput).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("logwatchd._scan", ["logwatchd/_scan.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
