from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.helpers import BACKEND, ROOT, Server
from tests.redis_server import RedisServer

SMALL_LIMIT = 1024 * 1024  # the size-limit tests' HOPPER_MAX_UPLOAD_BYTES
BACKENDS = ("local", "celery")
CHROMIUM = "/usr/bin/chromium"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every HTTP test runs against both backends, unless marked local_only (it tests what
    only the local backend has: its worker pool, its JSON records, its leases)."""
    if "backend" not in metafunc.fixturenames:
        return
    integration = "integration" in metafunc.definition.path.parts
    local_only = metafunc.definition.get_closest_marker("local_only") is not None
    backends = BACKENDS if integration and not local_only else ("local",)
    if metafunc.definition.get_closest_marker("celery_only") is not None:
        backends = ("celery",)
    metafunc.parametrize("backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session", autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which backend the servers started meanwhile use; with celery, a real redis-server
    the session starts once, and a Celery worker per server (tests.helpers.Server)."""
    name: str = getattr(request, "param", "local")
    if name == "celery":
        BACKEND.redis_url = request.getfixturevalue("redis_server").url
    BACKEND.name = name
    yield name
    BACKEND.name = "local"


@pytest.fixture(scope="session", autouse=True)
def _hopper_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `hopper` commands the tests run remember their unfinished uploads in a temp
    folder, never in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOPPER_CACHE_DIR", str(tmp_path_factory.mktemp("hopper-cache")))
        yield


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts (appends) itself, all stopped after it."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """One real server for the tests that only upload and read."""
    srv = Server(data_dir=tmp_path_factory.mktemp("srv") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (`playwright install` cannot
    download here)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the test set-up installs Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(bytes(range(256)) * 41)
    return path
