"""How ``--jobs`` workers start: forked from a server that imported what every cell imports.

A spawned worker is a fresh interpreter that spends about 4 s of a core importing torch,
transformers and editbench before its first cell, and about a second tearing them down after its
last (issue 34: the warm default run's minute). ``multiprocessing``'s forkserver imports them once,
in a process started before the main process resolves the plan (:func:`start_early`), so the
imports run on the other core while the main process resolves and scores the unedited model. Each
worker is then forked from that server: it starts in a fraction of a second with no editbench
state and no torch thread pool (the server ran no operation, so the reason spawned workers were
chosen over forked ones does not apply), and ends with ``os._exit`` once its cells are done.

The server takes the environment it starts in, and torch and transformers read theirs while
importing. So a pool uses the server only while the main process's environment is the one the
server started with, apart from ``EDITBENCH_*`` (read when needed; each worker takes the main
process's whole environment, :func:`worker_environment`) and what torch sets itself, and spawns
fresh interpreters otherwise, as it does where the platform has no forkserver or something else in
the process started one.

A forked worker's parent is the server, not the main process, and the server lives until its last
worker ends; so a worker watches the main process itself (:func:`watch_main`) and ends the moment
it does: a killed run leaves no worker writing on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import sys
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: what a cell of the default run imports before its first edit (the pocket model is a Llama);
#: a module that cannot be imported is skipped by the server
PRELOAD = (
    "torch", "transformers", "transformers.models.llama.modeling_llama", "numpy", "pandas",
    "safetensors.torch", "editbench.harness.running.side_by_side",
    "editbench.harness.running.executors", "editbench.harness.running.runner",
    "editbench.harness.evaluation.teacher_forced", "editbench.harness.evaluation.generated",
    "editbench.harness.plan.preflight", "editbench.methods", "editbench.methods.locate.editor",
    "editbench.methods.hypernet.core", "editbench.tasks", "editbench.tasks.pocket",
    "editbench.harness.running.preloaded",  # last: freezes what the others made (heap.py)
)
#: variables a worker may take from the main process although the server started with other
#: values: editbench's own (read when needed), and those torch sets for itself while importing
#: (``TORCHINDUCTOR_CACHE_DIR``), which the server has set as the main process did
CALL_TIME_PREFIXES = ("EDITBENCH_", "TORCHINDUCTOR_")

_server_environment: dict[str, str] | None = None  # set once this module started the server


def _comparable(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith(CALL_TIME_PREFIXES)}


def _someone_elses_server() -> bool:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None) is not None


def start_early() -> bool:
    """Start the server, which imports :data:`PRELOAD` in the background; returns whether a pool
    can now be forked from it. Does nothing where the platform has no forkserver or the process
    already runs one that this module did not start (a test harness's)."""
    global _server_environment
    if _server_environment is not None:
        return True
    if "forkserver" not in multiprocessing.get_all_start_methods() or _someone_elses_server():
        return False
    from multiprocessing import forkserver

    try:
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
        forkserver.ensure_running()
    except OSError as exc:  # no socket, no process: the pool spawns
        log.debug("workers will be spawned: the forkserver did not start (%s)", exc)
        return False
    _server_environment = _comparable(os.environ)
    return True


def pool_context():
    """The context a worker pool starts its processes in: the server's where it is this module's
    and the environment is still the one it started with, else fresh interpreters."""
    if _server_environment is not None and _comparable(os.environ) == _server_environment:
        from multiprocessing import forkserver

        forkserver.ensure_running()  # started again, with the same imports, if it died
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def worker_environment(environ: Mapping[str, str]) -> None:
    """In a worker: the main process's environment (a forked worker has the server's, which may
    differ in ``EDITBENCH_*``)."""
    if dict(os.environ) != dict(environ):
        os.environ.clear()
        os.environ.update(environ)


def watch_main(main: int) -> None:
    """In a worker: end this process the moment process ``main`` ends (a daemon thread). Linux
    wakes the thread when it does (a pidfd); elsewhere it looks ten times a second."""
    threading.Thread(target=_exit_with, args=(main,), daemon=True).start()


def _exit_with(main: int) -> None:
    try:
        fd = os.pidfd_open(main)  # type: ignore[attr-defined]  # Linux 5.3, Python 3.9
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has ended
        os._exit(1)
    while _alive(main):
        time.sleep(0.1)
    os._exit(1)


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # no forkserver there: the parent is the main process
        return os.getppid() == pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
