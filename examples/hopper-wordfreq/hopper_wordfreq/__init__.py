"""Example Hopper plugin: the ten most frequent words of a text file.

Install it next to Hopper (`pip install ./examples/hopper-wordfreq`) and upload with
`-F processors=wordfreq`, or let `auto` pick it for text files.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

WORD = re.compile(r"[^\W\d_]{2,}")
TOP = 10
CHUNK_LINES = 10_000


class WordFrequency:
    name = "wordfreq"
    description = "The ten most frequent words of a text file."
    version = "1.0.0"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return detected_type.startswith("text/")

    def run(self, ctx: Any) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        with ctx.path.open("rb") as raw:
            for number, line in enumerate(raw, 1):
                counts.update(w.lower() for w in WORD.findall(line.decode("utf-8", "replace")))
                if number % CHUNK_LINES == 0:
                    ctx.progress(raw.tell() / max(ctx.size, 1))
        top = counts.most_common(TOP)
        ctx.artifacts.write(
            "wordfreq.csv",
            "".join(f"{w},{n}\n" for w, n in top).encode(),
            "text/csv",
        )
        ctx.progress(1.0)
        return {"distinct_words": len(counts), "top": [{"word": w, "count": n} for w, n in top]}
