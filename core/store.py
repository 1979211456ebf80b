"""The results store: one SQLite database per output folder.

The runner is its only writer; ``report`` and ``publish`` only read it (HELM's split between
computing and presenting). WAL journaling plus one transaction per checkpoint means a process
killed at any moment leaves every finished checkpoint intact and no half-written one. A writer
holds the folder's lock (``OUT/.lock``) while it is open, so two processes never write one store;
readers take no lock and open the file read-only, which also works in a read-only folder.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from .cache import hold_folder
from .faults import fault_point
from .records import SAMPLE_KINDS, Metric, PhaseTime, SamplePrompt, SampleRow, ScoreRow

SCHEMA_VERSION = 4
DB_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created TEXT NOT NULL, task TEXT NOT NULL, model TEXT NOT NULL,
    config TEXT NOT NULL, versions TEXT NOT NULL, device TEXT NOT NULL, seed INTEGER NOT NULL,
    git_sha TEXT, dataset_hash TEXT NOT NULL, n_edits INTEGER NOT NULL, baseline TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT NOT NULL, method TEXT NOT NULL, method_config TEXT NOT NULL,
    config_hash TEXT NOT NULL, status TEXT NOT NULL, diverged_at INTEGER, error TEXT,
    updated TEXT NOT NULL, PRIMARY KEY (run_id, method)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL, method TEXT NOT NULL, n_edits INTEGER NOT NULL,
    edit_seconds REAL NOT NULL, eval_seconds REAL NOT NULL, seconds_per_edit REAL NOT NULL,
    peak_memory_bytes INTEGER NOT NULL, created TEXT NOT NULL,
    PRIMARY KEY (run_id, method, n_edits)
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL, method TEXT NOT NULL, n_edits INTEGER NOT NULL,
    position INTEGER NOT NULL, uid TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (run_id, method, n_edits, position, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timings (
    run_id TEXT NOT NULL, method TEXT NOT NULL, phase TEXT NOT NULL, step INTEGER NOT NULL,
    seconds REAL NOT NULL, PRIMARY KEY (run_id, method, phase, step)
);
CREATE TABLE IF NOT EXISTS capability (
    run_id TEXT NOT NULL, method TEXT NOT NULL, n_edits INTEGER NOT NULL, name TEXT NOT NULL,
    n INTEGER NOT NULL, accuracy REAL NOT NULL, PRIMARY KEY (run_id, method, n_edits, name)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, ord INTEGER NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS edit_batches (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS base_predictions (
    run_id TEXT NOT NULL, prompt TEXT NOT NULL, target TEXT NOT NULL, predictions TEXT NOT NULL,
    token_accuracy REAL NOT NULL, PRIMARY KEY (run_id, prompt, target)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS base_generations (
    run_id TEXT NOT NULL, prompt TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (run_id, prompt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    run_id TEXT NOT NULL, method TEXT NOT NULL, started TEXT NOT NULL, numerics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_files (
    run_id TEXT NOT NULL, method TEXT NOT NULL, n_edits INTEGER NOT NULL, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, PRIMARY KEY (run_id, method, n_edits, file)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sample_prompts (
    run_id TEXT NOT NULL, position INTEGER NOT NULL, kind INTEGER NOT NULL, idx INTEGER NOT NULL,
    uid TEXT NOT NULL, prompt TEXT NOT NULL, target TEXT NOT NULL, unedited TEXT NOT NULL,
    PRIMARY KEY (run_id, position, kind, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, method TEXT NOT NULL, n_edits INTEGER NOT NULL,
    position INTEGER NOT NULL, kind INTEGER NOT NULL, idx INTEGER NOT NULL,
    verdict INTEGER NOT NULL, text TEXT,
    PRIMARY KEY (run_id, method, n_edits, position, kind, idx)
) WITHOUT ROWID;
-- a rowid table: its rows (about a kilobyte each) would cost WITHOUT ROWID three times the space
CREATE TABLE IF NOT EXISTS edit_texts (
    run_id TEXT NOT NULL, position INTEGER NOT NULL, uid TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
);
"""
#: ``samples.verdict`` bits: the generated answer passes; the prompt passes teacher-forced
GENERATED_PASS, TEACHER_FORCED_PASS = 1, 2
#: tables that hold one method's results in one run (``--restart METHOD`` empties them)
METHOD_TABLES = ("cells", "checkpoints", "scores", "timings", "capability", "snapshot_files",
                 "sessions", "samples")
#: every table that holds rows of a run
RUN_TABLES = ("runs", "metrics", "edit_batches", "base_predictions", "base_generations",
              "sample_prompts", "edit_texts", *METHOD_TABLES)


class StoreError(RuntimeError):
    """The store cannot be opened, read or written; the message names the file and what to do."""


_COLUMNS: dict[str, dict[str, str]] = {}
_NULLABLE: set[str] = set()


def schema_columns() -> dict[str, dict[str, str]]:
    """Each table of ``SCHEMA`` with its columns and their declared types, read from an empty
    database made from it (so the check below cannot drift from the schema)."""
    if not _COLUMNS:
        conn = sqlite3.connect(":memory:")
        try:
            conn.executescript(SCHEMA)
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                info = conn.execute(f"PRAGMA table_info({table})").fetchall()
                _COLUMNS[table] = {row[1]: row[2] for row in info}
                _NULLABLE.update(row[1] for row in info if not row[3] and not row[5])
        finally:
            conn.close()
    return _COLUMNS


#: the tables every store has had; a later one may be absent from an older store (its readers
#: then find it empty)
_FIRST_TABLES = ("meta", "runs", "cells", "checkpoints", "scores", "timings")
#: columns that are never empty in any table that has them: an empty one read back means a
#: damaged file (SQLite does not notice every truncation)
_NOT_NULL = {name for columns in schema_columns().values() for name in columns} - _NULLABLE
#: tables with a row per scored prompt: their number columns are checked as they are read
_LARGE_TABLES = ("scores", "samples", "sample_prompts", "base_predictions", "edit_texts")
#: columns that hold numbers in every table that has them (a damaged store may hold text there)
_NUMERIC = {name for table in ("checkpoints", "scores", "timings", "capability", "edit_batches",
                               "metrics", "samples", "sample_prompts")
            for name, kind in schema_columns()[table].items() if kind in ("INTEGER", "REAL")}


def describe_sqlite_error(path: Path, exc: sqlite3.Error, reading: bool = False) -> str:
    """One line for a person: which store, what went wrong, what would work."""
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (f"{path} is not a readable editbench results store ({text}); it may be "
                "truncated or overwritten: restore it from a copy or use another folder")
    if reading:
        return f"cannot read the results store {path}: {text}"
    if "full" in text or "I/O error" in text:
        return (f"cannot write the results store {path}: {text} (is the disk full?); free space "
                "there and rerun the same command to resume")
    if "readonly" in text or "unable to open" in text:
        return f"cannot write the results store {path}: {text}; choose a writable --out"
    if "locked" in text:
        return f"the results store {path} is locked by another process ({text})"
    return f"results store {path}: {text}"


@contextmanager
def hold_store(folder: Path) -> Iterator[None]:
    """Be the one process that writes the results folder ``folder`` (created if need be) for the
    block; another process that tries gets a :class:`~editbench.core.cache.Busy` error naming this
    one. Reentrant: the runner and the store it opens may both hold it."""
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"--out {folder} is a file; results go to a folder: choose another --out")
    with ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(hold_folder(folder, f"the results folder {folder}"))
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StoreError(f"cannot write the results folder {folder} ({exc.strerror}); "
                                 "choose a writable --out") from None
            raise
        yield


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CellState:
    status: str  # running | done | diverged | failed
    config_hash: str
    last_checkpoint: int  # 0 when none is stored


class ResultsStore:
    """Read/write access to ``DIR/results.sqlite``."""

    def __init__(self, folder: Path | str, create: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self._resources = ExitStack()  # the writer's folder lock; a reader's private copy
        #: run_id -> the unedited answers of its scored prompts, for compacting samples
        self._unedited: dict[str, dict[tuple[int, int, int], str]] = {}
        try:
            if create:  # the writer sets the store up; a reader (report, publish) changes nothing
                self.conn = self._open_writer()
            else:
                if not self.path.is_file():
                    raise FileNotFoundError(
                        f"{self.folder} holds no editbench results ({DB_NAME} is missing)")
                self.conn = self._open_reader()
            self.version = self._version()
        except sqlite3.Error as exc:
            self._resources.close()
            raise StoreError(describe_sqlite_error(self.path, exc, reading=not create)) from None
        except BaseException:
            self._resources.close()
            raise
        if self.version is None:
            self.close()
            raise StoreError(f"{self.path} is not an editbench results store (an SQLite file "
                             "without editbench's tables: empty, or another program's); "
                             "use another folder")
        if not 1 <= self.version <= SCHEMA_VERSION:
            self.close()
            raise StoreError(f"{self.path} has schema version {self.version}; "
                             f"this editbench reads versions 1 to {SCHEMA_VERSION}")
        if not create:
            self._check_tables()

    def _open_writer(self) -> sqlite3.Connection:
        self._resources.enter_context(hold_store(self.folder))
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._resources.callback(conn.close)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self.conn = conn
        if self._version() is not None:  # an existing store: damage is refused, never papered over
            self.version = self._version()
            self._check_tables(every_row=True)
        self._migrate()
        try:  # one transaction: a new store appears whole (and costs its WAL a few pages, not a
            # few per table)
            conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta "
                               f"VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        """Read-only. In a read-only folder SQLite cannot make the WAL's side files, so the store is
        opened as immutable there, or, when a killed writer left a WAL behind, read from a private
        copy of both files (immutable would ignore the WAL's checkpoints)."""
        try:
            return self._connect_ro(self.path, "mode=ro")
        except sqlite3.OperationalError:
            wal = self.path.with_name(DB_NAME + "-wal")
            if not (wal.is_file() and wal.stat().st_size):
                return self._connect_ro(self.path, "immutable=1")
        copy = Path(self._resources.enter_context(
            tempfile.TemporaryDirectory(prefix="editbench-store-")))
        for name in (DB_NAME, DB_NAME + "-wal"):
            shutil.copyfile(self.folder / name, copy / name)
        return self._connect_ro(copy / DB_NAME, "mode=ro")

    def _connect_ro(self, path: Path, mode: str) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{quote(str(path.absolute()))}?{mode}", uri=True, timeout=60,
                               isolation_level=None)
        try:
            conn.execute("PRAGMA query_only=ON")
            # opens the file (and its WAL) now
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        self._resources.callback(conn.close)
        return conn

    def _version(self) -> int | None:
        if not self._has_table("meta"):
            return None
        found = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(found[0]) if found else None

    def _check_tables(self, every_row: bool = False) -> None:
        """Refuse a store that lost a table or a column, or holds text where a number belongs
        (edited or damaged outside editbench): read as it is, a dropped ``scores`` table would
        report a finished run with no scores, and a writer would recreate it empty and call the
        run done. A reader checks the rows of the large tables as it reads them (``_frame``); a
        writer, about to add to them, checks them all first (a second or two per 10M rows)."""
        tables = {name: {row[1] for row in self.conn.execute(f"PRAGMA table_info('{name}')")}
                  for (name,) in self.conn.execute(
                      "SELECT name FROM sqlite_master WHERE type='table'")}
        for table, columns in schema_columns().items():
            if table not in tables:
                if table in _FIRST_TABLES:
                    raise StoreError(f"{self.path} is damaged: its table {table!r} is missing; "
                                     "restore the store from a copy, or use another --out")
                continue
            expected = set(columns)
            if table == "capability" and self.version == 1:
                expected = expected - {"name"} | {"probe"}
            missing = sorted(expected - tables[table])
            if missing:
                raise StoreError(f"{self.path} is damaged: table {table!r} lacks the column "
                                 f"{missing[0]!r}; restore the store from a copy, or use "
                                 "another --out")
            if table == "runs" and every_row:  # the JSON every reader parses (runs())
                for run_id, *texts in self.conn.execute(
                        "SELECT run_id, config, versions, baseline FROM runs"):
                    for column, text in zip(("config", "versions", "baseline"), texts):
                        self._json(text, run_id, column)
            if table in _LARGE_TABLES and not every_row:
                continue
            for column, kind in columns.items():
                if kind not in ("INTEGER", "REAL") or column not in tables[table]:
                    continue
                found = self.conn.execute(
                    f"SELECT {column} FROM {table} WHERE typeof({column}) NOT IN "
                    "('integer', 'real', 'null') LIMIT 1").fetchone()
                if found is not None:
                    raise StoreError(f"{self.path} is damaged: {table}.{column} holds "
                                     f"{str(found[0])[:40]!r} where a number belongs; restore "
                                     "the store from a copy, or use another --out")

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                 (name,)).fetchone() is not None

    def _migrate(self) -> None:
        """Bring an older store up to date before writing to it. Version 2 calls the
        general-capability sets' column ``name`` (it was ``probe``) and adds the metric catalogue
        and the edit batches, which older runs simply lack (reports then show plainer headers and no
        time intervals); version 3 adds the edited models' answers (``samples``, with the scored
        prompts in ``sample_prompts``), which older checkpoints lack (``editbench samples`` says
        so); version 4 adds each edit's text (``edit_texts``), which older runs lack (``editbench
        export --lm-eval`` says so). The new tables themselves come from ``SCHEMA``."""
        version = self._version()
        if version is None or version >= SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            if version == 1 and self._has_table("capability"):
                conn.execute("ALTER TABLE capability RENAME COLUMN probe TO name")
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                         (str(SCHEMA_VERSION),))

    def close(self) -> None:
        """Close the connection and, for a writer, release the folder's lock."""
        self._resources.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing. A failure of the file itself (disk full, I/O, read-only, corrupt) becomes
        a :class:`StoreError` naming the store; a constraint violation stays an IntegrityError."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original error says more
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(describe_sqlite_error(self.path, exc)) from exc

    # -- writing ------------------------------------------------------------------------------
    def ensure_run(self, run_id: str, **fields: Any) -> bool:
        """Record a run once; returns False when it was already stored (a resume)."""
        if self.conn.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
            return False
        columns = ["run_id", "created", *fields]
        values = [run_id, _now(),
                  *(json.dumps(v) if isinstance(v, dict) else v for v in fields.values())]
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO runs ({', '.join(columns)}) "
                         f"VALUES ({', '.join('?' * len(columns))})", values)
        return True

    def run_versions(self, run_id: str) -> dict[str, Any] | None:
        """The versions (and code identity, ``core/identity.py``) a stored run records; None for a
        run not stored here."""
        row = self.conn.execute("SELECT versions FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def note_code_change(self, run_id: str, now: dict[str, str]) -> None:
        """A run resumed under other code (``--allow-code-change``): its versions take the new code
        and ``code_changes`` keeps each change, which the board marks."""
        versions = self.run_versions(run_id) or {}
        change = (f"code {versions.get('code') or 'not recorded'} (editbench "
                  f"{versions.get('editbench', '?')}) -> code {now['code']} (editbench "
                  f"{now['editbench']}) on {_now()[:10]}")
        earlier = versions.get("code_changes")
        versions.update(now, code_changes=f"{earlier}; {change}" if earlier else change)
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET versions=? WHERE run_id=?",
                         (json.dumps(versions), run_id))

    def drop_run(self, run_id: str) -> None:
        """Forget a run whole, its baseline too (``--restart`` of every method of a run made by
        other code)."""
        with self.transaction() as conn:
            for table in RUN_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))

    def stored_methods(self, run_id: str) -> list[str]:
        """The methods with results (or a started cell) in a run."""
        return [r[0] for r in self.conn.execute(
            "SELECT method FROM cells WHERE run_id=? UNION SELECT method FROM checkpoints "
            "WHERE run_id=? ORDER BY 1", (run_id, run_id))]

    def save_run_outline(self, run_id: str, metrics: Iterable[Metric],
                          batches: Iterable[tuple[int, int]]) -> None:
        """What a report needs to present a run without the code that made it: each metric's
        description and direction, and the edit batches as run (``[start, stop)`` per step)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                             [(run_id, i, m.name, m.description, int(m.higher_is_better))
                              for i, m in enumerate(metrics)])
            conn.executemany("INSERT OR REPLACE INTO edit_batches VALUES (?, ?, ?, ?)",
                             [(run_id, step, start, stop)
                              for step, (start, stop) in enumerate(batches)])

    def cell(self, run_id: str, method: str) -> CellState | None:
        row = self.conn.execute("SELECT status, config_hash FROM cells WHERE run_id=? AND method=?",
                                (run_id, method)).fetchone()
        if row is None:
            return None
        last = self.conn.execute("SELECT MAX(n_edits) FROM checkpoints WHERE run_id=? AND method=?",
                                 (run_id, method)).fetchone()[0]
        return CellState(row[0], row[1], last or 0)

    def record_session(self, run_id: str, method: str, numerics: dict) -> dict | None:
        """Note that ``method`` ('' for the baseline) starts or resumes work under ``numerics``
        (``core/numerics.py``); returns the numerics of its previous session, if it had one."""
        previous = self.conn.execute("SELECT numerics FROM sessions WHERE run_id=? AND method=? "
                                     "ORDER BY rowid DESC LIMIT 1", (run_id, method)).fetchone()
        with self.transaction() as conn:
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                         (run_id, method, _now(), json.dumps(numerics)))
        return json.loads(previous[0]) if previous else None

    def start_cell(self, run_id: str, method: str, method_config: dict, config_hash: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO cells VALUES (?, ?, ?, ?, 'running', NULL, NULL, ?) "
                "ON CONFLICT(run_id, method) DO UPDATE SET status='running', error=NULL, "
                "updated=excluded.updated",
                (run_id, method, json.dumps(method_config), config_hash, _now()),
            )

    def finish_cell(self, run_id: str, method: str, status: str, *, diverged_at: int | None = None,
                    error: str | None = None) -> None:
        """End a running cell; a cell that is not running (finished by another run) keeps its
        status."""
        with self.transaction() as conn:
            conn.execute("UPDATE cells SET status=?, diverged_at=?, error=?, updated=? "
                         "WHERE run_id=? AND method=? AND status='running'",
                         (status, diverged_at, error, _now(), run_id, method))

    def drop_cell(self, run_id: str, method: str) -> None:
        """Forget everything one method stored in one run (``--restart METHOD``)."""
        with self.transaction() as conn:
            for table in METHOD_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE run_id=? AND method=?", (run_id, method))

    def snapshot_checksums(self, run_id: str, method: str, n_edits: int) -> dict[str, str]:
        """SHA-256 of each file of the snapshot stored with a checkpoint (empty for checkpoints
        written by an editbench that did not record them)."""
        rows = self.conn.execute("SELECT file, sha256 FROM snapshot_files "
                                 "WHERE run_id=? AND method=? AND n_edits=?",
                                 (run_id, method, n_edits))
        return dict(rows.fetchall())

    def record_timings(self, run_id: str, method: str, timings: Iterable[PhaseTime]) -> None:
        with self.transaction() as conn:
            self._insert_timings(conn, run_id, method, timings)

    @staticmethod
    def _insert_timings(conn, run_id: str, method: str, timings: Iterable[PhaseTime]) -> None:
        conn.executemany("INSERT OR REPLACE INTO timings VALUES (?, ?, ?, ?, ?)",
                         [(run_id, method, t.phase, t.step, t.seconds) for t in timings])

    def commit_checkpoint(self, run_id: str, method: str, n_edits: int, scores: Iterable[ScoreRow],
                          timings: Iterable[PhaseTime], peak_memory_bytes: int,
                          capability: dict[str, tuple[int, float]] | None = None,
                          snapshot: dict[str, str] | None = None,
                          samples: Iterable[SampleRow] = ()) -> None:
        """Write one checkpoint's scores, timings, capability probes, the checksums of its
        snapshot's files (``snapshot``: file name -> SHA-256) and the edited model's answers
        (``samples``, whose prompts :meth:`save_sample_prompts` stored), all or nothing."""
        timings = list(timings)
        samples = self._compact_samples(run_id, method, n_edits, samples)
        with self.transaction() as conn:
            self._insert_capability(conn, run_id, method, n_edits, capability or {})
            self._insert_timings(conn, run_id, method, timings)
            edit_seconds = conn.execute(
                "SELECT COALESCE(SUM(seconds), 0) FROM timings "
                "WHERE run_id=? AND method=? AND phase='edit'",
                (run_id, method)).fetchone()[0]
            eval_seconds = sum(t.seconds for t in timings if t.phase == "eval")
            previous_peak = conn.execute(
                "SELECT COALESCE(MAX(peak_memory_bytes), 0) FROM checkpoints "
                "WHERE run_id=? AND method=?",
                (run_id, method)).fetchone()[0]
            conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (run_id, method, n_edits, edit_seconds, eval_seconds,
                          edit_seconds / n_edits, max(previous_peak, peak_memory_bytes), _now()))
            conn.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(run_id, method, n_edits, s.position, s.uid, s.metric, s.value)
                              for s in scores])
            conn.executemany("INSERT INTO snapshot_files VALUES (?, ?, ?, ?, ?)",
                             [(run_id, method, n_edits, name, digest)
                              for name, digest in (snapshot or {}).items()])
            conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)", samples)
            fault_point("in-checkpoint")

    def _compact_samples(self, run_id: str, method: str, n_edits: int,
                         samples: Iterable[SampleRow]) -> list[tuple]:
        """Rows of the ``samples`` table. Compact: the kind is a small integer (its index in
        ``SAMPLE_KINDS``), both verdicts share one integer, and an answer equal to the unedited
        model's (most neighbourhood answers; any prompt an edit left alone) is stored as NULL."""
        samples = list(samples)
        if not samples:
            return []
        unedited = self._unedited.get(run_id)
        if unedited is None:
            unedited = self._unedited[run_id] = {
                (p, k, i): text for p, k, i, text in self.conn.execute(
                    "SELECT position, kind, idx, unedited FROM sample_prompts WHERE run_id=?",
                    (run_id,))}
        rows = []
        for s in samples:
            key = (s.position, SAMPLE_KINDS.index(s.kind), s.index)
            if key not in unedited:
                raise ValueError(f"edit {s.position}'s {s.kind} prompt {s.index} has no stored "
                                 f"prompt in run {run_id}; save_sample_prompts comes first")
            verdict = (GENERATED_PASS * s.generated_pass
                       + TEACHER_FORCED_PASS * s.teacher_forced_pass)
            rows.append((run_id, method, n_edits, *key, verdict,
                         None if s.text == unedited[key] else s.text))
        return rows

    @staticmethod
    def _insert_capability(conn, run_id: str, method: str, n_edits: int,
                           capability: dict[str, tuple[int, float]]) -> None:
        conn.executemany("INSERT INTO capability VALUES (?, ?, ?, ?, ?, ?)",
                         [(run_id, method, n_edits, name, n, acc)
                          for name, (n, acc) in capability.items()])

    def save_unedited_capability(self, run_id: str,
                                 capability: dict[str, tuple[int, float]]) -> None:
        """The unedited model's general-capability accuracy, stored as method '' at 0 edits."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM capability WHERE run_id=? AND method='' AND n_edits=0",
                         (run_id,))
            self._insert_capability(conn, run_id, "", 0, capability)

    def save_base_predictions(self, run_id: str,
                              rows: Iterable[tuple[str, str, tuple[int, ...], float]]) -> None:
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO base_predictions VALUES (?, ?, ?, ?, ?)",
                             [(run_id, p, t, json.dumps(list(ids)), acc)
                              for p, t, ids, acc in rows])

    def load_base_predictions(
        self, run_id: str
    ) -> dict[tuple[str, str], tuple[tuple[int, ...], float]]:
        rows = self.conn.execute("SELECT prompt, target, predictions, token_accuracy "
                                 "FROM base_predictions WHERE run_id=?", (run_id,))
        return {(p, t): (tuple(json.loads(ids)), acc) for p, t, ids, acc in rows}

    def save_base_generations(self, run_id: str, generations: dict[str, str]) -> None:
        """The unedited model's greedy answers at neighbourhood prompts (the generated metrics'
        reference)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO base_generations VALUES (?, ?, ?)",
                             [(run_id, prompt, text) for prompt, text in generations.items()])

    def load_base_generations(self, run_id: str) -> dict[str, str]:
        if not self._has_table("base_generations"):
            return {}
        rows = self.conn.execute("SELECT prompt, text FROM base_generations WHERE run_id=?",
                                 (run_id,))
        return dict(rows.fetchall())

    def save_sample_prompts(self, run_id: str, prompts: Iterable[SamplePrompt]) -> None:
        """The run's scored prompts, once: what was asked, the answer scored against and the
        unedited model's answer (the samples of each checkpoint refer to them)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO sample_prompts "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(run_id, p.position, SAMPLE_KINDS.index(p.kind), p.index, p.uid,
                               p.prompt, p.target, p.unedited) for p in prompts])
        self._unedited.pop(run_id, None)

    def sample_positions(self, run_id: str) -> set[int]:
        """The edits whose scored prompts are stored (empty in a store from before samples)."""
        if not self._has_table("sample_prompts"):
            return set()
        rows = self.conn.execute("SELECT DISTINCT position FROM sample_prompts WHERE run_id=?",
                                 (run_id,))
        return {p for (p,) in rows}

    def save_edit_texts(self, run_id: str, texts: Iterable[tuple[int, str, dict]]) -> None:
        """Each edit's text, once per run: (position in the stream, uid, the record as a JSON
        object: prompt, subject, targets, paraphrases, neighbours, portability...), so that the
        edits can be read, and scored elsewhere (``editbench export --lm-eval``), without the task
        that made them. Rows already stored are kept (a resume plans the same stream)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO edit_texts VALUES (?, ?, ?, ?)",
                             [(run_id, position, uid,
                               json.dumps(record, ensure_ascii=False, separators=(",", ":")))
                              for position, uid, record in texts])

    def edit_text_count(self, run_id: str) -> int:
        """How many edits of ``run_id`` have their text stored (0 in a store from before texts)."""
        if not self._has_table("edit_texts"):
            return 0
        return self.conn.execute("SELECT COUNT(*) FROM edit_texts WHERE run_id=?",
                                 (run_id,)).fetchone()[0]

    def edit_texts(self, run_id: str | None = None) -> pd.DataFrame:
        """The edits' texts: run_id, position, uid, record (a dict); empty for a store, or a run,
        from before they were kept."""
        columns = ["run_id", "position", "uid", "record"]
        if not self._has_table("edit_texts"):
            return pd.DataFrame(columns=columns)
        where, params = ("WHERE run_id=? ", (run_id,)) if run_id is not None else ("", ())
        frame = self._frame(f"SELECT {', '.join(columns)} FROM edit_texts {where}"
                            "ORDER BY run_id, position", params)
        records = []
        for run, position, text in zip(frame["run_id"], frame["position"], frame["record"]):
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise StoreError(f"{self.path} is damaged: run {run}'s edit {position} text is not "
                                 "a JSON object; restore the store from a copy")
            records.append(record)
        frame["record"] = records
        return frame

    def set_baseline(self, run_id: str, baseline: dict[str, float]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET baseline=? WHERE run_id=?",
                         (json.dumps(baseline), run_id))

    def merge_from(self, other: Path) -> None:
        """Fold another store (a sweep worker's) into this one, in one transaction.

        Rows already here are kept (the same run and cell computed again is the same result);
        a cell's status comes from the worker, which ran it last.
        """
        # not allowed inside a transaction
        self.conn.execute("ATTACH DATABASE ? AS worker", (str(other),))
        try:
            with self.transaction() as conn:
                for table in ("runs", "checkpoints", "scores", "timings", "capability",
                              "base_predictions", "base_generations", "metrics", "edit_batches",
                              "sample_prompts", "samples", "edit_texts"):
                    if not conn.execute("SELECT 1 FROM worker.sqlite_master WHERE type='table' "
                                        "AND name=?", (table,)).fetchone():
                        continue  # a worker store from before the table
                    conn.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM worker.{table}")
                conn.execute("INSERT OR REPLACE INTO cells SELECT * FROM worker.cells")
                conn.execute("INSERT INTO sessions SELECT * FROM worker.sessions AS w "
                             "WHERE NOT EXISTS (SELECT 1 "
                             "FROM sessions AS s WHERE s.run_id=w.run_id AND s.method=w.method AND "
                             "s.started=w.started AND s.numerics=w.numerics)")
        finally:
            self.conn.execute("DETACH DATABASE worker")

    def seed_from(self, other: Path, run_id: str) -> None:
        """Copy into this store, in one transaction, what another store holds of run ``run_id``
        before any method: its record, outline, edit texts and baseline (the unedited model's
        predictions, answers and timings). A cell run in a worker process starts from it instead
        of scoring the unedited model again."""
        self.conn.execute("ATTACH DATABASE ? AS source", (str(other),))  # not in a transaction
        try:
            with self.transaction() as conn:
                for table in RUN_TABLES:
                    unedited = " AND method=''" if table in METHOD_TABLES else ""
                    conn.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM source.{table} "
                                 f"WHERE run_id=?{unedited}", (run_id,))
        finally:
            self.conn.execute("DETACH DATABASE source")

    # -- reading ------------------------------------------------------------------------------
    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        """A query's rows; a number column that holds text (a store changed outside editbench) is
        a :class:`StoreError` naming it, not a wrong mean or a TypeError later."""
        frame = pd.read_sql_query(sql, self.conn, params=params)
        for column in frame.columns:
            if column in _NOT_NULL and frame[column].isna().any():
                raise StoreError(f"{self.path} is damaged: column {column!r} is empty where a "
                                 "value belongs (a truncated or overwritten file); restore the "
                                 "store from a copy")
            if column in _NUMERIC and not pd.api.types.is_numeric_dtype(frame[column]):
                numbers = pd.to_numeric(frame[column], errors="coerce")
                bad = frame[column][numbers.isna() & frame[column].notna()]
                if not bad.empty:
                    raise StoreError(f"{self.path} is damaged: column {column!r} holds "
                                     f"{str(bad.iloc[0])[:40]!r} where a number belongs; restore "
                                     "the store from a copy")
                frame[column] = numbers
        return frame

    def _json(self, text: Any, run_id: str, column: str) -> dict:
        """A stored JSON column; empty where it is unset (a run that failed before its baseline
        has none)."""
        if not isinstance(text, str) or not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise StoreError(f"{self.path} is damaged: run {run_id}'s {column} is not a JSON "
                             "object; restore the store from a copy")
        return value

    def runs(self) -> pd.DataFrame:
        frame = self._frame("SELECT * FROM runs ORDER BY created")
        for column in ("config", "versions", "baseline"):
            frame[column] = [self._json(v, r, column) for v, r in zip(frame[column],
                                                                       frame["run_id"])]
        return frame

    def sessions(self) -> pd.DataFrame:
        """Each start or resume of a method ('' = the baseline) with its numerics (a dict); empty
        for a store written before they were recorded."""
        frame = self._table("sessions", ["run_id", "method", "started", "numerics"], "rowid")
        frame["numerics"] = frame["numerics"].map(
            lambda v: json.loads(v) if isinstance(v, str) else {})
        return frame

    def cells(self) -> pd.DataFrame:
        return self._frame("SELECT * FROM cells")

    def checkpoints(self) -> pd.DataFrame:
        return self._frame("SELECT * FROM checkpoints ORDER BY run_id, method, n_edits")

    def _table(self, name: str, columns: list[str], order: str) -> pd.DataFrame:
        """A whole table, or an empty frame with its columns where an older store lacks it."""
        if not self._has_table(name):
            return pd.DataFrame(columns=columns)
        return self._frame(f"SELECT {', '.join(columns)} FROM {name} ORDER BY {order}")

    def capability(self) -> pd.DataFrame:
        """General-capability accuracy: run_id, method ('' = unedited, at n_edits 0), n_edits,
        name, n, accuracy."""
        name = "probe" if self.version == 1 else "name"  # a version-1 store opened for reading only
        frame = self._table("capability", ["run_id", "method", "n_edits", name, "n", "accuracy"],
                            f"run_id, method, n_edits, {name}")
        return frame.rename(columns={"probe": "name"})

    def metrics(self) -> pd.DataFrame:
        """The metric catalogue of each run: run_id, ord, name, description, higher_is_better."""
        frame = self._table("metrics", ["run_id", "ord", "name", "description", "higher_is_better"],
                            "run_id, ord")
        return frame.astype({"higher_is_better": bool})

    def edit_batches(self) -> pd.DataFrame:
        """The edit batches of each run as run: run_id, step, start, stop."""
        return self._table("edit_batches", ["run_id", "step", "start", "stop"], "run_id, step")

    def timings(self) -> pd.DataFrame:
        return self._frame("SELECT * FROM timings ORDER BY run_id, method, phase, step")

    def scores(self) -> pd.DataFrame:
        """Per-edit scores in long form: run_id, method, n_edits, position, uid, metric, value."""
        return self._frame("SELECT * FROM scores "
                           "ORDER BY run_id, method, n_edits, position, metric")

    def sample_checkpoints(self) -> pd.DataFrame:
        """Where answers are stored: run_id, method, n_edits, samples (how many); empty for a store
        from before samples, or runs without generated scoring."""
        if not self._has_table("samples"):
            return pd.DataFrame(columns=["run_id", "method", "n_edits", "samples"])
        return self._frame("SELECT run_id, method, n_edits, COUNT(*) AS samples FROM samples "
                           "GROUP BY run_id, method, n_edits ORDER BY run_id, method, n_edits")

    def samples(self, run_id: str | None = None, method: str | None = None,
                n_edits: int | None = None) -> pd.DataFrame:
        """The edited models' answers, each beside its prompt: run_id, method, n_edits, position,
        uid, kind (a name of ``SAMPLE_KINDS``), index, prompt, target, unedited (the unedited
        model's answer), text (the edited model's), generated_pass, teacher_forced_pass; narrowed
        to a run, a method and a checkpoint where they are given."""
        columns = ["run_id", "method", "n_edits", "position", "uid", "kind", "index", "prompt",
                   "target", "unedited", "text", "generated_pass", "teacher_forced_pass"]
        if not self._has_table("samples"):
            return pd.DataFrame(columns=columns)
        where, params = [], []
        for column, value in (("run_id", run_id), ("method", method), ("n_edits", n_edits)):
            if value is not None:
                where.append(f"s.{column}=?")
                params.append(value)
        frame = self._frame(
            "SELECT s.run_id, s.method, s.n_edits, s.position, p.uid, s.kind, s.idx AS \"index\", "
            "p.prompt, p.target, p.unedited, COALESCE(s.text, p.unedited) AS text, "
            f"(s.verdict & {GENERATED_PASS}) > 0 AS generated_pass, "
            f"(s.verdict & {TEACHER_FORCED_PASS}) > 0 AS teacher_forced_pass "
            "FROM samples AS s JOIN sample_prompts AS p ON p.run_id=s.run_id "
            "AND p.position=s.position AND p.kind=s.kind AND p.idx=s.idx"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY s.run_id, s.method, s.n_edits, s.position, s.kind, s.idx", tuple(params))
        frame["kind"] = frame["kind"].map(lambda k: SAMPLE_KINDS[k])
        return frame.astype({"generated_pass": bool, "teacher_forced_pass": bool})

    def per_edit(self) -> pd.DataFrame:
        """Per-edit scores, one column per metric."""
        long = self.scores()
        if long.empty:
            return long
        wide = long.pivot_table(index=["run_id", "method", "n_edits", "position", "uid"],
                                columns="metric", values="value").reset_index()
        wide.columns.name = None
        return wide

    def summary(self) -> pd.DataFrame:
        """Mean of every metric per (run, method, checkpoint), joined with time and memory."""
        wide = self.per_edit()
        if wide.empty:
            return wide
        metrics = [c for c in wide.columns
                   if c not in ("run_id", "method", "n_edits", "position", "uid")]
        means = wide.groupby(["run_id", "method", "n_edits"])[metrics].mean().reset_index()
        return means.merge(self.checkpoints(), on=["run_id", "method", "n_edits"])

    def retention(self, bins: int = 10) -> pd.DataFrame:
        """Score by the position at which an edit was made, in ``bins`` equal slices (deciles) of
        the edits made so far, per checkpoint: a falling curve means early edits are forgotten."""
        wide = self.per_edit()
        if wide.empty:
            return wide
        wide = wide.copy()
        wide["bin"] = (wide["position"] * bins // wide["n_edits"]).astype(int)
        metrics = [c for c in wide.columns
                   if c not in ("run_id", "method", "n_edits", "position", "uid", "bin")]
        return wide.groupby(["run_id", "method", "n_edits", "bin"])[metrics].mean().reset_index()


def load_results(folder: Path | str) -> ResultsStore:
    """Open a results folder for reading (the pandas API)."""
    return ResultsStore(folder, create=False)
