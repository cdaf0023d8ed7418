# The C part of the record path (_scan.c); see scan_lines' docstring there.
def scan_lines(data: bytes, first_line: int, max_line_bytes: int, min_epoch: int,
               max_epoch: int, ms_threshold: int) -> tuple[
    int, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, int, bytes,
    bytes, bytes, bytes, int]: ...
