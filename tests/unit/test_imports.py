"""The local backend (the default) loads none of the Celery backend's libraries: Celery,
Kombu and redis-py are 40-odd MiB in each process (the API and every job worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

CHECK = (
    "import sys, app.main, app.pool_worker; "
    "print(sorted(m for m in ('celery', 'kombu', 'redis') if m in sys.modules))"
)


def test_the_local_backend_imports_no_celery_kombu_or_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPPER_")}
    env["HOPPER_DATA_DIR"] = str(tmp_path / "data")
    loaded = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stderr
