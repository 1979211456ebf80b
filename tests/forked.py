"""``editbench`` commands in their own processes without importing torch each time.

The kill-and-resume tests need real processes: one is killed (``os._exit`` at a fault point,
SIGKILL, SIGSTOP) and a fresh one resumes from what the first left on disk. A fresh interpreter
spends about 3 s of a micro-model run's 4.7 s importing torch, transformers and editbench, and the
suite starts dozens of them (issue 30: the suite's time). So each such process is forked from a
server (``multiprocessing``'s forkserver) that imported those modules once and ran nothing: the
child starts with no editbench state, no open store, no torch thread pool (the server never ran an
operation), exactly what a new interpreter has after its imports, and it dies as one does.

:func:`run` and :func:`start` take the argument list a test would give ``subprocess``
(``[sys.executable, "-m", "editbench.harness.cli.group", ...]``) and its environment. The child sets
that environment before the command runs; editbench reads its variables (``EDITBENCH_*``) when it
needs them, but torch and transformers read theirs while importing, so a call whose environment
differs from the server's in anything but ``EDITBENCH_*``, ``RAY_*`` and ``PYTEST_*`` runs in a real
interpreter instead, as does any other command line. ``python -c SCRIPT ARGS`` is forked too."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from editbench.harness.running import worker_start

CLI = [sys.executable, "-m", "editbench.harness.cli.group"]
#: variables read when editbench needs them (core/cache.py, core/faults.py, core/progress.py),
#: when Ray starts (it is not preloaded) or by pytest alone (PYTEST_CURRENT_TEST names the test),
#: so a child may set them differently from the server
CALL_TIME_PREFIXES = ("EDITBENCH_", "RAY_", "PYTEST_")
#: what a micro-model run imports, so the child has it already: what a ``--jobs`` worker's server
#: preloads, and the command line and reports
PRELOAD = [
    *worker_start.PRELOAD, "transformers.models.gpt2.modeling_gpt2", "scipy",
    "editbench.harness.cli.group", "editbench.harness.cli.run", "editbench.reports.tables",
    "editbench.reports.cli",
]
#: the server's environment: the tests' processes run offline on one thread (test_faults._env)
SERVER_SETTINGS = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_context = None
_server_env: dict[str, str] = {}


def _server():
    global _context, _server_env
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        saved = dict(os.environ)
        server_env = {key: value for key, value in {**saved, **SERVER_SETTINGS}.items()
                      if not key.startswith(CALL_TIME_PREFIXES)}
        os.environ.clear()
        os.environ.update(server_env)
        try:  # the server takes the environment it starts in
            from multiprocessing import forkserver

            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _context, _server_env = context, server_env
    return _context


def _forkable(args: Sequence[str], env: Mapping[str, str]) -> bool:
    if list(args[:len(CLI)]) != CLI and list(args[:2]) != [sys.executable, "-c"]:
        return False
    _server()
    keys = set(env) | set(_server_env)
    return all(env.get(key) == _server_env.get(key) for key in keys
               if not key.startswith(CALL_TIME_PREFIXES))


def _child(args: list[str], env: dict[str, str], stdout: str, stderr: str, preexec) -> None:
    """``editbench ARGS`` or, for ``python -c SCRIPT ARGS``, the script, then the exit a process
    makes: no cleanup beyond flushing what the command printed."""
    os.environ.clear()
    os.environ.update(env)
    for path, fd in ((stdout, 1), (stderr, 2)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    if preexec is not None:
        preexec()
    code = 1
    try:
        if args[1] == "-c":
            sys.argv = ["-c", *args[3:]]
            exec(compile(args[2], "<string>", "exec"), {"__name__": "__main__"})
        else:
            from editbench.harness.cli.group import main

            main.main(args=args[len(CLI):], prog_name="editbench", standalone_mode=True)
        code = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:  # as the interpreter does with a message
            print(exit_.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Started:
    """The part of ``subprocess.Popen`` the tests use, for a command started by :func:`start`:
    forked from the server, or (where it cannot be) a real interpreter. Its output goes to files,
    never a pipe that a test polling the process would leave to fill, and :meth:`communicate`
    reads them."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], merge_stderr: bool = False,
                 preexec: Callable[[], None] | None = None):
        self._folder = tempfile.TemporaryDirectory(prefix="editbench-forked-")
        folder = Path(self._folder.name)
        self._stdout = folder / "stdout"
        self._stderr = self._stdout if merge_stderr else folder / "stderr"
        self.returncode: int | None = None
        self._process = self._popen = None
        if _forkable(args, env):
            self._process = _server().Process(
                target=_child, args=(list(args), dict(env), str(self._stdout),
                                     str(self._stderr), preexec))
            self._process.start()
            self.pid = self._process.pid
        else:
            with open(self._stdout, "w") as out:
                err = subprocess.STDOUT if merge_stderr else open(self._stderr, "w")
                try:
                    self._popen = subprocess.Popen(list(args), env=dict(env), stdout=out,
                                                   stderr=err, preexec_fn=preexec)
                finally:
                    if err is not subprocess.STDOUT:
                        err.close()
            self.pid = self._popen.pid

    def poll(self) -> int | None:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            elif not self._process.is_alive():
                self._process.join()
                self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self._popen is not None:
            self.returncode = self._popen.wait(timeout)
            return self.returncode
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(CLI, timeout)
        return self.returncode

    def kill(self) -> None:
        (self._popen or self._process).kill()

    def stderr_so_far(self) -> str:
        """What the command has written to its standard error until now."""
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        stdout = self._stdout.read_text(errors="replace") if self._stdout.exists() else ""
        stderr = (self._stderr.read_text(errors="replace")
                  if self._stderr != self._stdout and self._stderr.exists() else "")
        self._folder.cleanup()
        return stdout, stderr


def start(args: Sequence[str], env: Mapping[str, str], merge_stderr: bool = False,
          preexec: Callable[[], None] | None = None) -> Started:
    """Like ``subprocess.Popen(args, env=env, stdout=PIPE, stderr=PIPE or STDOUT, text=True,
    preexec_fn=preexec)``; a forked command gets ``preexec`` (picklable) before it starts."""
    return Started(args, env, merge_stderr, preexec)


def run(args: Sequence[str], env: Mapping[str, str], timeout: float = 600,
        preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
    preexec_fn=preexec)``."""
    process = start(args, env, preexec=preexec)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise subprocess.TimeoutExpired(list(args), timeout) from None
    return subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr)
