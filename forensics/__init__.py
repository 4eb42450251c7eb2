"""o2f: forensic snapshot-and-diff for container overlay storage.

The Python API lives in :mod:`forensics.api`; the most used names are here too.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Lazy, so that `import forensics` (e.g. for the version) loads no capture or storage code.
    if name in ("collect", "open_snapshot", "open_analysis", "verify"):
        from forensics import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["__version__", "collect", "open_analysis", "open_snapshot", "verify"]
