"""Processors by name, and pipelines: which names run for a job."""

from __future__ import annotations

from app.errors import BadUpload
from app.processors.base import Processor
from app.processors.checksums import Checksums
from app.processors.inspect import Inspect

AUTO = "auto"
MAX_PIPELINE = 16


class Registry:
    def __init__(self, processors: list[Processor]) -> None:
        self._by_name = {p.name: p for p in processors}

    def get(self, name: str) -> Processor:
        return self._by_name[name]

    def all(self) -> list[Processor]:
        return list(self._by_name.values())

    def parse_pipeline(self, spec: str) -> list[str]:
        """Comma-separated names -> a checked list; an unknown name is the client's error."""
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise BadUpload("Name at least one processor, or leave 'processors' out.")
        if len(names) > MAX_PIPELINE:
            raise BadUpload(f"A pipeline has at most {MAX_PIPELINE} processors.")
        unknown = [n for n in names if n != AUTO and n not in self._by_name]
        if unknown:
            known = ", ".join([AUTO, *sorted(self._by_name)])
            shown = ", ".join(repr(n[:40]) for n in unknown)
            raise BadUpload(f"Unknown processor {shown}. Available: {known}.")
        return list(dict.fromkeys(names))  # a repeated name runs once

    def expand(self, names: list[str], detected_type: str) -> list[str]:
        """Replace `auto` by `inspect` plus every auto processor that accepts the type."""
        expanded: list[str] = []
        for name in names:
            if name == AUTO:
                expanded += [
                    p.name for p in self._by_name.values() if p.in_auto and p.accepts(detected_type)
                ]
            else:
                expanded.append(name)
        return list(dict.fromkeys(expanded))


def builtin_registry() -> Registry:
    return Registry([Inspect(), Checksums()])
