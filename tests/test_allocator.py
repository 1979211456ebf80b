"""The allocator settings a computing command applies (``harness/running/allocator.py``): blocks
of activation size come from the heap instead of a fresh mapping each, the user's own setting
wins, and nothing happens twice. Each case in a fresh interpreter, since a process is tuned once."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, json
from editbench.harness.running.allocator import tune_allocator

libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    during = libc.mallinfo2().hblks
    libc.free(block)
    return during - before

seen = {"before": mapped(4 << 20)}
seen["tuned"] = tune_allocator()
seen["after"], seen["large"] = mapped(4 << 20), mapped(512 << 20)
seen["again"] = tune_allocator()
print(json.dumps(seen))
"""


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


def _run(**variables: str) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**env, **variables},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _glibc(), reason="glibc's allocator (mallinfo2, glibc 2.33+) on Linux")
def test_a_tuned_process_takes_activation_sized_blocks_from_the_heap():
    seen = _run()
    assert seen["before"] == 1  # glibc's default: a 4 MiB block is a mapping of its own
    assert seen["tuned"] and seen["again"]
    assert seen["after"] == 0  # now from the heap
    assert seen["large"] == 1  # a block the heap cannot hold is still mapped on its own


@pytest.mark.skipif(not _glibc(), reason="glibc's allocator (mallinfo2, glibc 2.33+) on Linux")
def test_the_users_own_threshold_wins():
    seen = _run(MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    assert seen["before"] == 1 and seen["after"] == 1


def test_the_commands_that_compute_tune_it_and_the_others_do_not(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from editbench.harness.cli import group

    calls: list[str] = []
    monkeypatch.setattr(group, "tune_allocator", lambda: calls.append("tuned"))
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(group.main, ["list"]).exit_code == 0
    assert calls == []
    result = CliRunner().invoke(group.main, ["run", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert calls == ["tuned"]
