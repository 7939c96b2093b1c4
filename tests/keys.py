"""Test helpers for HOPPER_AUTH=keys: API keys made by the real `hopper` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

HOPPER = Path(sys.executable).parent / "hopper"  # the console script pip installed


def hopper(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOPPER_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(HOPPER), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def make_key(data_dir: Path, name: str, scope: str = "upload,read", *extra: str) -> str:
    """`hopper keys create`: the key is the only line on standard output."""
    done = hopper(data_dir, "keys", "create", "--name", name, "--scope", scope, *extra)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("hop_") and "\n" not in key, done.stdout
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
