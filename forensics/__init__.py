"""o2f: forensic snapshot-and-diff for container overlay storage."""

__version__ = "0.1.0"
