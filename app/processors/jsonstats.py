"""`json`: valid or where it breaks, top-level type, keys, depth; streamed with ijson."""

from __future__ import annotations

from typing import Any

from app.processors.base import Context

MAX_KEYS = 100
PROGRESS_EVERY_EVENTS = 100_000
_OPEN = {"start_map": "object", "start_array": "array"}
_CLOSE = {"end_map", "end_array"}


class JsonProcessor:
    name = "json"
    description = "Valid or where it breaks, top-level type and keys, nesting depth."
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return detected_type == "application/json"

    def run(self, ctx: Context) -> dict[str, Any]:
        stats: dict[str, Any] = {"valid": True, "top_level": None, "keys": [], "items": 0}
        import ijson  # loaded in the worker only

        depth = max_depth = events = 0
        with ctx.path.open("rb") as f:
            try:
                for prefix, event, value in ijson.parse(f):
                    events += 1
                    if stats["top_level"] is None:
                        stats["top_level"] = _OPEN.get(event, "scalar")
                    if event in _OPEN:
                        depth += 1
                        max_depth = max(max_depth, depth)
                    elif event in _CLOSE:
                        depth -= 1
                    _count_top_level(stats, prefix, event, value)
                    if events % PROGRESS_EVERY_EVENTS == 0:
                        ctx.progress(f.tell() / max(ctx.size, 1))
            except ijson.JSONError as exc:
                stats["valid"] = False
                stats["error"] = str(exc)[:300]
                stats["error_offset"] = f.tell()
        stats["depth"] = max_depth
        ctx.progress(1.0)
        return stats


def _count_top_level(stats: dict[str, Any], prefix: str, event: str, value: Any) -> None:
    # ijson names a top-level array's elements "item": each one starts with exactly one
    # event under that prefix that is neither a closing bracket nor a key of its own.
    if prefix == "" and event == "map_key" and len(stats["keys"]) < MAX_KEYS:
        stats["keys"].append(str(value)[:100])
    elif prefix == "item" and event not in _CLOSE and event != "map_key":
        stats["items"] += 1
