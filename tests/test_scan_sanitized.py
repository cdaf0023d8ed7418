"""The C record path under AddressSanitizer and UndefinedBehaviorSanitizer.

`logwatchd/_scan.c` reads untrusted bytes: it is compiled here with `-fsanitize=address,undefined`
and the whole of tests/test_scan.py (edge lines, random and mutated blocks, 400,000 levels of
nesting) runs against that build in a subprocess; any out-of-bounds access, use after free
or undefined behaviour aborts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _runtime(name: str) -> str | None:
    cc = shutil.which("gcc")
    if cc is None:
        return None
    path = subprocess.run([cc, f"-print-file-name={name}"], check=False, capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


ASAN, UBSAN = _runtime("libasan.so"), _runtime("libubsan.so")

LOADER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("logwatchd._scan", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["logwatchd._scan"] = module
import logwatchd.records
assert logwatchd.records._scan is module
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[2]]))
"""


@pytest.mark.skipif(ASAN is None or UBSAN is None,
                    reason="gcc with libasan and libubsan is needed to build the sanitized module")
def test_the_c_path_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    so = tmp_path / "_scan_sanitized.so"
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", "-shared", "-fPIC", f"-I{include}",
                    str(ROOT / "logwatchd" / "_scan.c"), "-o", str(so)], check=True)
    # PYTHONMALLOC=malloc: every object is a malloc block of its own, so that reading past
    # the end of a bytes object is seen (not hidden inside one of pymalloc's pools).
    env = dict(os.environ, LD_PRELOAD=f"{ASAN}:{UBSAN}", ASAN_OPTIONS="detect_leaks=0",
               PYTHONMALLOC="malloc", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run([sys.executable, "-c", LOADER, str(so), str(ROOT / "tests" / "test_scan.py")],
                       check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert " passed" in r.stdout and "failed" not in r.stdout
