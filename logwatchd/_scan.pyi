# The C part of the record path (_scan.c); see scan_lines' docstring there.
from typing import Any

def scan_lines(data: bytes, first_line: int, max_line_bytes: int, min_epoch: int,
               max_epoch: int, ms_threshold: int, min_us: int, max_us: int,
               naive_utc: bool) -> dict[str, Any]: ...
def flat_objects(buf: bytes | bytearray, pos: int, max_count: int, max_bytes: int,
                 max_element: int) -> tuple[list[bytes], int, int, bool]: ...
