"""Time each built-in processor on a large sample of its type: seconds per MiB.

    .venv/bin/python bench/processors.py [--mib 64] [--rounds 3]

Samples are generated into a temp folder (random but realistic content); each processor
runs in this process, as it would in a worker, and the median of the rounds is printed
as a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.artifacts import Artifacts
from app.detect import detect_type, refine_text_type
from app.processors.base import Context, Processor
from app.processors.registry import builtin_registry

JOB_ID = "BENCHBENCHBENCHBENCH00"
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
]


def text_sample(path: Path, mib: int) -> None:
    rng = random.Random(1)
    with path.open("w") as f:
        while f.tell() < mib << 20:
            f.write(" ".join(rng.choices(WORDS, k=12)) + "\n")


def csv_sample(path: Path, mib: int) -> None:
    rng = random.Random(2)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "price", "day", "name", "flag"])
        row = 0
        while f.tell() < mib << 20:
            row += 1
            price = "" if row % 17 == 0 else f"{rng.random() * 100:.2f}"
            writer.writerow([row, price, f"2026-01-{row % 28 + 1:02d}", rng.choice(WORDS), "yes"])


def json_sample(path: Path, mib: int) -> None:
    rng = random.Random(3)
    with path.open("w") as f:
        f.write("[")
        first = True
        while f.tell() < mib << 20:
            item = {"id": rng.randrange(10**9), "tags": rng.choices(WORDS, k=4), "v": rng.random()}
            f.write(("" if first else ",") + json.dumps(item))
            first = False
        f.write("]")


def zip_sample(path: Path, mib: int) -> None:
    rng = random.Random(4)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(mib):
            archive.writestr(f"dir/file{i}.bin", rng.randbytes(1 << 20))


def image_sample(path: Path, mib: int) -> None:
    from PIL import Image

    side = int((mib << 20) ** 0.5 / 1.7)  # an RGB PNG of noise is ~ the raw size
    Image.frombytes("RGB", (side, side), random.Random(5).randbytes(side * side * 3)).save(path)


def pdf_sample(path: Path, mib: int) -> None:
    from pypdf import PdfWriter

    from tests import samples

    one = samples.pdf(path.with_suffix(".one.pdf"))
    writer = PdfWriter()
    for _ in range(max(1, mib * 64)):  # many pages of text; the processor reads three
        writer.append(str(one))
    with path.open("wb") as f:
        writer.write(f)


def binary_sample(path: Path, mib: int) -> None:
    path.write_bytes(random.Random(6).randbytes(mib << 20))


SAMPLES: dict[str, tuple[str, Callable[[Path, int], None]]] = {
    "inspect": ("data.bin", binary_sample),
    "checksums": ("data.bin", binary_sample),
    "text": ("words.txt", text_sample),
    "csv": ("table.csv", csv_sample),
    "json": ("items.json", json_sample),
    "archive": ("files.zip", zip_sample),
    "image": ("noise.png", image_sample),
    "pdf": ("pages.pdf", pdf_sample),
}


def time_processor(processor: Processor, path: Path, work: Path) -> float:
    detected = refine_text_type(detect_type(path), path.name, "")
    ctx = Context(
        job_id=JOB_ID,
        path=path,
        filename=path.name,
        size=path.stat().st_size,
        sha256="",
        detected_type=detected,
        declared_type="",
        progress=lambda _: None,
        artifacts=Artifacts(JOB_ID, work / "artifacts"),
    )
    start = time.perf_counter()
    processor.run(ctx)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    registry = builtin_registry()
    print("| processor | sample | size MiB | s per MiB (median of rounds) | MiB/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (filename, make) in SAMPLES.items():
            path = work / filename
            if not path.exists():
                make(path, args.mib)
            size = path.stat().st_size / (1 << 20)
            times = [time_processor(registry.get(name), path, work) for _ in range(args.rounds)]
            per_mib = statistics.median(times) / size
            print(f"| {name} | {filename} | {size:.1f} | {per_mib:.4f} | {1 / per_mib:.0f} |")


if __name__ == "__main__":
    main()
