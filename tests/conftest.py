from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, Server

SMALL_LIMIT = 1024 * 1024  # the size-limit tests' HOPPER_MAX_UPLOAD_BYTES


@pytest.fixture(scope="session", autouse=True)
def _hopper_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `hopper` commands the tests run remember their unfinished uploads in a temp
    folder, never in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOPPER_CACHE_DIR", str(tmp_path_factory.mktemp("hopper-cache")))
        yield


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the tests that only upload and read."""
    srv = Server(data_dir=tmp_path_factory.mktemp("srv") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a 1 MiB limit, for the size-limit and bad-input cases."""
    data = tmp_path_factory.mktemp("small") / "data"
    srv = Server(data_dir=data, env={"HOPPER_MAX_UPLOAD_BYTES": str(SMALL_LIMIT)}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def plugins_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin and the misbehaving test plugins, installed for test servers
    (put this on their PYTHONPATH)."""
    target = tmp_path_factory.mktemp("plugins")
    packages = [ROOT / "examples" / "hopper-wordfreq", ROOT / "tests" / "plugins"]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(target), *map(str, packages)], check=True)
    return target


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(bytes(range(256)) * 41)
    return path
