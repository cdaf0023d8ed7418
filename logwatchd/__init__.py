"""logwatchd: files of JSON log records dropped into an inbox become a Parquet dataset, exactly once."""

__version__ = "0.1.0"
