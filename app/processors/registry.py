"""Processors by name, and pipelines: which names run for a job."""

from __future__ import annotations

import logging
import re
from importlib.metadata import EntryPoint, entry_points

from app.errors import BadUpload
from app.processors.archive import ArchiveProcessor
from app.processors.base import Processor
from app.processors.checksums import Checksums
from app.processors.csvstats import CsvProcessor
from app.processors.image import ImageProcessor
from app.processors.inspect import Inspect
from app.processors.jsonstats import JsonProcessor
from app.processors.pdf import PdfProcessor
from app.processors.text import TextProcessor

log = logging.getLogger("hopper.processors")

AUTO = "auto"
ENTRY_POINT_GROUP = "hopper.processors"
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
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


def builtin_processors() -> list[Processor]:
    return [
        Inspect(),
        ImageProcessor(),
        PdfProcessor(),
        TextProcessor(),
        CsvProcessor(),
        JsonProcessor(),
        ArchiveProcessor(),
        Checksums(),
    ]


def builtin_registry() -> Registry:
    return Registry(builtin_processors())


def load_registry() -> Registry:
    """Built-ins plus every plugin installed under the `hopper.processors` entry point."""
    processors = builtin_processors()
    taken = {p.name for p in processors}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = _load_plugin(entry)
        if plugin is None:
            continue
        if plugin.name in taken or plugin.name == AUTO:
            log.warning("plugin %s: the name %r is taken; plugin ignored", entry.value, plugin.name)
            continue
        taken.add(plugin.name)
        processors.append(plugin)
    return Registry(processors)


def _load_plugin(entry: EntryPoint) -> Processor | None:
    try:
        loaded = entry.load()
        plugin = loaded() if isinstance(loaded, type) else loaded
    except Exception:  # a broken plugin must not stop the service
        log.exception("plugin %s could not be loaded", entry.value)
        return None
    if not isinstance(plugin, Processor):
        log.error("plugin %s is not a Processor (name, description, run, ...)", entry.value)
        return None
    if not _NAME_RE.fullmatch(plugin.name):
        log.error("plugin %s: name %r must match %s", entry.value, plugin.name, _NAME_RE.pattern)
        return None
    return plugin
