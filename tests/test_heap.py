"""The collector skips the long-lived heap (harness/running/heap.py): nothing frozen is walked
again, at a worker's collections or at the interpreter's end."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from editbench.harness.cli import group
from editbench.harness.running import worker_start

#: a reference cycle that only a collection can free, saying so when it is freed
CYCLE = """
import gc, sys
gc.disable()
{before}
class Node:
    def __del__(self):
        sys.stdout.write("collected\\n")
a, b = Node(), Node()
a.other, b.other = b, a
del a, b
"""


@pytest.mark.parametrize("before, collected", [
    ("", True),  # the interpreter's last collection walks the heap and frees the cycle
    ("from editbench.harness.running import heap; heap.skip_final_collection()", False),
])
def test_the_final_collection_walks_nothing_once_skipped(before, collected):
    result = subprocess.run([sys.executable, "-c", CYCLE.format(before=before)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ("collected" in result.stdout) is collected


def test_frozen_objects_are_still_freed_by_their_last_reference():
    script = ("import sys\nfrom editbench.harness.running import heap\n"
              "class Node:\n    def __del__(self):\n        sys.stdout.write('freed\\n')\n"
              "n = Node()\nheap.freeze_what_exists()\ndel n\nsys.stdout.write('after\\n')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["freed", "after"]


def test_every_command_skips_the_final_collection(monkeypatch):
    calls = []
    monkeypatch.setattr(group, "skip_final_collection", lambda: calls.append(1))
    result = CliRunner().invoke(group.main, ["list"])
    assert result.exit_code == 0, result.output
    assert calls == [1]


def test_the_worker_server_freezes_what_it_imported_last():
    assert worker_start.PRELOAD[-1] == "editbench.harness.running.preloaded"
    script = ("import gc\nimport editbench.harness.running.preloaded\n"
              "print(gc.get_freeze_count() > 1000)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["True"], result.stderr
