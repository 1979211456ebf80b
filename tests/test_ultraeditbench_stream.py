"""UltraEditBench is streamed: reading every record of a file takes memory that does not grow
with the file (the published file holds two million records in 801 MB). The figure for a
generated 2M-record file is in docs/notes/issue-33-loaders.md."""

from __future__ import annotations

import json
import tracemalloc
from contextlib import closing
from pathlib import Path

from editbench.core.sources import iter_json_records
from editbench.tasks.ultraeditbench import stream


def write_records(path: Path, n: int) -> None:
    """``n`` records in UltraEditBench's layout, as one JSON list (written a block at a time)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("[\n")
        for start in range(0, n, 10000):
            out.write(",\n".join(json.dumps({
                "prompt": f"What is the capital of region {i}?",
                "rephrase_prompt": f"Region {i}'s capital is which city?", "ans": f"City {i}",
                "loc": f"who wrote book {i}", "loc_ans": f"Author {i}"})
                for i in range(start, min(n, start + 10000))))
            out.write(",\n" if start + 10000 < n else "\n")
        out.write("]\n")


def _peak(path: Path) -> tuple[int, int]:
    """Records read and the peak of memory allocated while streaming all of them, in chunks of
    64 KiB (both files are many chunks long)."""
    tracemalloc.start()
    try:
        count = 0
        with closing(stream(path, chunk_size=1 << 16)) as records:
            for _ in records:
                count += 1
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_the_record_count(tmp_path):
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    write_records(small, 3_000)
    write_records(large, 30_000)
    n_small, peak_small = _peak(small)
    n_large, peak_large = _peak(large)
    assert (n_small, n_large) == (3_000, 30_000)
    # ten times the records; holding them would take ten times the memory (about 12 MB here)
    assert peak_large < 1.5 * peak_small + (1 << 20), (peak_small, peak_large)
    assert peak_large < 4 << 20  # a 64 KiB chunk of text, its decoded copy and one record


def test_the_streamed_records_are_the_file_records(tmp_path):
    path = tmp_path / "data.json"
    write_records(path, 12_001)  # crosses blocks and chunk ends
    raw = [value for _, value in iter_json_records(path, chunk_size=4096)]
    assert raw == json.loads(path.read_text())
