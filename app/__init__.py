"""Hopper: upload a file over HTTP, get a job id at once, poll for the result."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Looked up on first use: importlib.metadata costs every `hopper` command 30 ms.
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("hopper")
    except PackageNotFoundError:  # running from a checkout that was never installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
