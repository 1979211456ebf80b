"""Where a command may write what the user named: never over something the user owns.

A report's ``--csv``/``--md``/``--latex`` file, a report or site folder (``--html``, ``--site``),
a trained editor's or a bench's folder and a run's ``--out`` are all chosen by the user, and a
typo there used to cost a results store (``report RUNS --csv RUNS/results.sqlite`` wrote CSV over
it). The rule, stated in README ("Results and resume"):

- never a results store (``results.sqlite`` and its side files), nor anything inside a results
  folder's snapshots, run files or saved models;
- an existing file only when editbench wrote it: it begins as editbench's files of that format
  begin (each format's :data:`FIRST_LINES` entry: the Markdown, LaTeX and CSV boards' first
  lines, the selfcheck figures' first key, the comparison page's doctype);
- an existing folder for pages only when it is empty or holds editbench's own ``index.html``
  (marked by ``<meta name="generator" content="editbench">``).

Each refusal is an :class:`OutputRefused` (a ``ValueError``: the command line prints it as one
line) that names the option and says what would work. Nothing here writes.
"""

from __future__ import annotations

from pathlib import Path

#: the results store's file names (``core/store.py``) and the lock of its folder
STORE_FILES = ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", ".lock")
#: what a run keeps inside its results folder besides the store
RESULTS_PARTS = ("snapshots", "run-files", "models")
#: how each file editbench writes begins (its first line, with its end); a file that begins
#: otherwise is the user's
FIRST_LINES = {
    "md": "# editbench leaderboard\n",
    "latex": "% editbench leaderboard; needs \\usepackage{booktabs}.\n",
    "csv": "task,protocol,run_id,method,n_edits,status,column,mean,low,high,n,mark\n",
    "selfcheck": '{\n  "editbench": "selfcheck",\n',
    "compare": "<!DOCTYPE html><!-- editbench compare -->\n",  # reports/compare.py's page
}
#: how a page editbench wrote says so (``reports/templates/base.html``)
PAGE_MARK = '<meta name="generator" content="editbench">'


class OutputRefused(ValueError):
    """An output path that would overwrite or mix into something the user owns."""


def results_folder_of(path: Path) -> Path | None:
    """The results folder whose store, snapshots, run files or saved models ``path`` is or lies
    in; ``None`` for any other path."""
    path = Path(path).absolute()
    if path.name in STORE_FILES and (path.parent / STORE_FILES[0]).exists():
        return path.parent
    for folder in (path, *path.parents):
        if folder.name in RESULTS_PARTS and (folder.parent / STORE_FILES[0]).is_file():
            return folder.parent
    return None


def _refuse_results(path: Path, option: str) -> None:
    if Path(path).name == STORE_FILES[0]:
        raise OutputRefused(f"{option} {path} is a results store; choose another file name "
                            "(editbench never writes over a store)")
    owner = results_folder_of(path)
    if owner is not None:
        raise OutputRefused(f"{option} {path} lies inside the results folder {owner} (its store, "
                            "snapshots, run files or saved models); choose a path outside them")


def written_by_editbench(path: Path, fmt: str) -> bool:
    """Whether the file ``path`` begins as editbench's ``fmt`` files do."""
    mark = FIRST_LINES[fmt].encode()
    with open(path, "rb") as handle:
        head = handle.read(2 * len(mark)).replace(b"\r\n", b"\n")
    return head.startswith(mark)


def check_output_file(path: Path | str, option: str, fmt: str) -> None:
    """Refuse ``path`` for a ``fmt`` file (a key of :data:`FIRST_LINES`) unless it is new or one
    editbench wrote."""
    path = Path(path)
    if str(path).strip() == "" or str(path) == ".":
        raise OutputRefused(f"{option} needs a file name")
    _refuse_results(path, option)
    if path.is_dir():
        raise OutputRefused(f"{option} {path} is a folder; name a file")
    if path.exists() and not written_by_editbench(path, fmt):
        raise OutputRefused(
            f"{option} {path} exists and editbench did not write it (it does not begin "
            f"{FIRST_LINES[fmt].splitlines()[-1].strip()!r}); choose a new file name, or remove "
            "the file yourself")


def check_pages_folder(path: Path | str, option: str) -> None:
    """Refuse ``path`` for a report's or site's pages unless it is new, empty or holds the pages
    editbench wrote before."""
    path = Path(path)
    if str(path).strip() == "":
        raise OutputRefused(f"{option} needs a folder name")
    _refuse_results(path, option)
    if path.exists() and not path.is_dir():
        raise OutputRefused(f"{option} {path} is a file; pages go to a folder")
    if (path / STORE_FILES[0]).exists():
        raise OutputRefused(f"{option} {path} is a results folder; write the pages elsewhere")
    if path.is_dir() and any(path.iterdir()):
        index = path / "index.html"
        ours = index.is_file() and PAGE_MARK in index.read_text("utf-8", "replace")[:4096]
        if not ours:
            raise OutputRefused(
                f"{option} {path} holds files editbench did not write (no index.html of an "
                "earlier report); choose a new or empty folder")


def check_work_folder(path: Path | str, option: str) -> None:
    """Refuse ``path`` as a folder a command fills (a run's results, a trained editor, a bench)
    when it is empty text or lies inside a results folder's own parts."""
    path = Path(path)
    if str(path).strip() == "":
        raise OutputRefused(f"{option} needs a folder name")
    if path.exists() and not path.is_dir():
        raise OutputRefused(f"{option} {path} is a file; choose a folder")
    owner = results_folder_of(path)
    if owner is not None:
        raise OutputRefused(f"{option} {path} lies inside the results folder {owner} (its "
                            "snapshots, run files or saved models); choose a folder outside them")
