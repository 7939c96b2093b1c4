"""Hopper: upload a file over HTTP, get a job id at once, poll for the result."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hopper")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
