from __future__ import annotations

import pytest

from app.errors import BadUpload
from app.processors.registry import builtin_registry


def test_pipeline_names_are_checked_and_deduplicated() -> None:
    registry = builtin_registry()
    assert registry.parse_pipeline(" inspect, checksums ,inspect") == ["inspect", "checksums"]


@pytest.mark.parametrize("spec", ["", " , ", "nope", "inspect,<script>"])
def test_unknown_or_empty_pipelines_are_400(spec: str) -> None:
    with pytest.raises(BadUpload):
        builtin_registry().parse_pipeline(spec)


def test_auto_expands_to_inspect_but_not_the_heavy_checksums() -> None:
    registry = builtin_registry()
    assert registry.expand(["auto"], "text/plain") == ["inspect", "text"]
    assert registry.expand(["auto", "checksums"], "image/png") == ["inspect", "image", "checksums"]
