"""The report's second process (reports/background.py): its result when it works, and the same
work done in line when it does not, so a report never depends on it."""

import os
import sys

import pytest

from editbench.reports.background import Background

PARENT = os.getpid()


def test_the_work_runs_in_another_process_and_its_result_comes_back():
    seen = Background(lambda: {"pid": os.getpid(), "rows": [1, 2, 3]}).result()
    assert seen["rows"] == [1, 2, 3]
    if sys.platform == "linux":
        assert seen["pid"] != PARENT


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_child_that_fails_leaves_the_work_to_this_process(how):
    def work():
        if os.getpid() != PARENT:
            if how == "raises":
                raise RuntimeError("only in the child")
            os._exit(3)
        return "done here"

    assert Background(work).result() == "done here"
