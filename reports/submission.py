"""Submissions: one run of a results store as one self-describing JSON file, for the leaderboard.

A store is a working file (SQLite, snapshots' checksums, the edited models' answers, locks); a
submission is what a leaderboard needs to rank a run and to say where its numbers came from, and
nothing a reader must trust without checking:

- the run record: task, model and its hub revision, dataset hash, seed, the whole run config with
  its protocol, the code that ran it (editbench version, git sha, code identity where the store
  has one) and the hardware (device, each session's numerics), the metric catalogue, the edit
  batches, each method's settings and status, and the timings;
- the per-edit scores, column-wise (one list of values per method, checkpoint and metric);
- the summaries (mean of every metric per method and checkpoint), for a reader without editbench;
- two hashes: ``scores_sha256`` over the canonical per-edit scores and ``content_sha256`` over the
  whole document.

:func:`validate` checks a file against all of it: the schema, the hashes, the summaries recomputed
from the per-edit scores, the run id recomputed from the config, and every reference between the
parts. The hashes catch a file changed by hand or damaged in transit; they are not signatures (a
forger can recompute them), which is why a submission names the code, model and data that make
its numbers reproducible. Reading a submission gives the same frames a store gives
(:func:`submission_frames`), so the reports and the site treat both alike.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.configs import config_hash
from ..core.protocol import from_record
from ..core.store import load_results

FORMAT = "editbench-submission"
SCHEMA = 1
#: where ``editbench submit`` writes, relative to the working directory (the repository's root)
DEFAULT_FOLDER = Path("leaderboard") / "submissions"
SUFFIXES = (".json", ".json.gz")
#: summaries agree with the per-edit scores to this relative tolerance (a mean written by another
#: program may round in its last digits)
SUMMARY_TOLERANCE = 1e-9


class SubmissionError(ValueError):
    """A submission that cannot be written or read; the message names the file and the field."""


# -- identity ----------------------------------------------------------------------------------
def code_identity() -> str:
    """The hash of the installed editbench source (``core/identity.py``, issue 30). Recorded as
    what *submitted* the run; the identity of the code that *ran* it is the store's
    (:func:`stored_identity`)."""
    from ..core import identity

    return identity.code_identity()["code"]


def stored_identity(versions: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The code identity a store recorded for a run (in its versions, else its config); ``None``
    for a run stored before identities were."""
    found = (versions.get("code") or versions.get("code_identity")
             or config.get("code_identity"))
    return str(found) if found else None


def is_submission(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIXES)


def submission_files(folder: Path) -> list[Path]:
    """The submissions of a folder (not its subfolders), by name."""
    return sorted(p for p in folder.iterdir() if is_submission(p))


# -- the canonical forms the hashes cover -----------------------------------------------------
def _number(value: Any) -> float | None:
    """A score as the hashes and summaries see it: a float, or None for a missing (NaN) one."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _compact(value: float | None) -> float | int | None:
    """How a score is written: 1.0 as ``1`` (most scores are 0 or 1), anything else exactly."""
    if value is None:
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def score_rows(doc: dict[str, Any]) -> Iterable[tuple[str, int, int, str, str, float]]:
    """(method, n_edits, position, uid, metric, value) for every per-edit score of a document:
    the rows of the store's ``scores`` table. A null is a metric the edit was not scored on (a
    store holds no row for it, and cannot hold a NaN)."""
    uids = doc["scores"]["uids"]
    for cell in doc["scores"]["cells"]:
        for metric, values in sorted(cell["values"].items()):
            for position, value in zip(cell["positions"], values):
                number = _number(value)
                if number is not None:
                    yield cell["method"], cell["n_edits"], position, uids[position], metric, number


def scores_hash(doc: dict[str, Any]) -> str:
    """SHA-256 over the per-edit scores in one canonical form, whatever their layout in the file:
    one JSON line per score, sorted by method, checkpoint, position and metric, values as
    floats."""
    digest = hashlib.sha256()
    for row in sorted(score_rows(doc), key=lambda r: r[:3] + (r[4],)):
        digest.update(json.dumps(list(row), ensure_ascii=True).encode() + b"\n")
    return digest.hexdigest()


def content_hash(doc: dict[str, Any]) -> str:
    """SHA-256 over the whole document but its ``hashes``, as canonical JSON (sorted keys)."""
    body = {k: v for k, v in doc.items() if k != "hashes"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def summaries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean of every metric per method and checkpoint, over the edits with a value (``n``)."""
    found = []
    for cell in doc["scores"]["cells"]:
        for metric, values in sorted(cell["values"].items()):
            present = [v for v in map(_number, values) if v is not None]
            found.append({"method": cell["method"], "n_edits": cell["n_edits"], "metric": metric,
                          "n": len(present),
                          "mean": math.fsum(present) / len(present) if present else None})
    return found


def run_id_of(config: dict[str, Any]) -> str:
    """The run id the runner gives this config (``resolve``: the hash of the run config, which
    the store keeps with the list of methods added)."""
    return config_hash({k: v for k, v in config.items() if k != "methods"})


# -- writing -----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-ready: NaN and infinity become null, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _optional(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _own_version() -> str:
    try:
        return version("editbench")
    except PackageNotFoundError:
        return "(not installed)"


def build(folder: Path | str, run_id: str, now: str | None = None) -> dict[str, Any]:
    """The submission of run ``run_id`` of the store in ``folder``; raises SubmissionError for a
    run that is not there or has a method still running (its numbers are not final)."""
    store = load_results(folder)
    try:
        runs = store.runs()
        if run_id not in set(runs["run_id"]):
            raise SubmissionError(f"{folder}: no run {run_id} in this store (it holds "
                                  f"{', '.join(runs['run_id']) or 'none'})")
        pick = {name: (lambda frame: frame[frame["run_id"] == run_id])(getattr(store, name)())
                for name in ("cells", "checkpoints", "scores", "timings", "capability",
                             "metrics", "edit_batches", "sessions")}
    finally:
        store.close()
    run = runs[runs["run_id"] == run_id].iloc[0]
    unfinished = sorted(pick["cells"].loc[pick["cells"]["status"] == "running", "method"])
    if unfinished:
        raise SubmissionError(f"{folder}: run {run_id}: {', '.join(unfinished)} has not finished "
                              "(status running); rerun the same command to finish the run, then "
                              "submit it")
    config, versions = dict(run["config"] or {}), dict(run["versions"] or {})
    scores = pick["scores"]
    uids: dict[int, str] = dict(zip(scores["position"].astype(int), scores["uid"]))
    cells = []
    for (method, n_edits), group in scores.groupby(["method", "n_edits"], sort=True):
        wide = group.pivot_table(index="position", columns="metric", values="value",
                                 dropna=False).sort_index()
        cells.append({"method": method, "n_edits": int(n_edits),
                      "positions": [int(p) for p in wide.index],
                      "values": {m: [_compact(_number(v)) for v in wide[m]]
                                 for m in sorted(wide.columns)}})
    doc: dict[str, Any] = {
        "format": FORMAT, "schema": SCHEMA,
        "submitted": now or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "submitted_with": {"editbench": _own_version(), "code_identity": code_identity()},
        "run": {"run_id": run_id, "created": run["created"], "task": run["task"],
                "model": run["model"], "model_revision": config.get("model_revision"),
                "seed": int(run["seed"]), "n_edits": int(run["n_edits"]),
                "dataset_hash": run["dataset_hash"], "config": config,
                "baseline": dict(run["baseline"] or {})},
        # a run stored before protocols ran editbench's at its turn size
        "protocol": config.get("protocol") or from_record(None, config.get("batch_size")).record(),
        "code": {"editbench": versions.get("editbench"), "git_sha": _optional(run["git_sha"]),
                 "identity": stored_identity(versions, config), "versions": versions},
        "hardware": {"device": run["device"],
                     "sessions": [{"method": m, "started": s, "numerics": n} for m, s, n in
                                  zip(pick["sessions"]["method"], pick["sessions"]["started"],
                                      pick["sessions"]["numerics"])]},
        "metrics": [{"name": r.name, "description": r.description,
                     "higher_is_better": bool(r.higher_is_better)}
                    for r in pick["metrics"].sort_values("ord").itertuples(index=False)],
        "edit_batches": [[int(r.start), int(r.stop)]
                         for r in pick["edit_batches"].sort_values("step").itertuples(index=False)],
        "methods": [{"method": c.method, "config": json.loads(c.method_config),
                     "config_hash": c.config_hash, "status": c.status,
                     "diverged_at": None if pd.isna(c.diverged_at) else int(c.diverged_at),
                     "error": _optional(c.error), "updated": c.updated}
                    for c in pick["cells"].sort_values("method").itertuples(index=False)],
        "checkpoints": [{"method": c.method, "n_edits": int(c.n_edits),
                         "edit_seconds": c.edit_seconds, "eval_seconds": c.eval_seconds,
                         "seconds_per_edit": c.seconds_per_edit,
                         "peak_memory_bytes": int(c.peak_memory_bytes), "created": c.created}
                        for c in pick["checkpoints"].itertuples(index=False)],
        "timings": [[t.method, t.phase, int(t.step), t.seconds]
                    for t in pick["timings"].itertuples(index=False)],
        "capability": [{"method": c.method, "n_edits": int(c.n_edits), "name": c.name,
                        "n": int(c.n), "accuracy": c.accuracy}
                       for c in pick["capability"].itertuples(index=False)],
        "scores": {"uids": [uids.get(p) for p in range(max(uids, default=-1) + 1)],
                   "cells": cells},
    }
    doc = json.loads(json.dumps(_plain(doc), allow_nan=False))  # exactly what a reader will see
    doc["summaries"] = summaries(doc)
    doc["hashes"] = {"scores_sha256": scores_hash(doc), "content_sha256": content_hash(doc)}
    return doc


def file_name(doc: dict[str, Any], compress: bool = False) -> str:
    """``TASK-MODEL-RUNID.json`` (``.json.gz`` compressed), in characters every file system and
    URL accepts."""
    run = doc["run"]
    model = re.split(r"[\\/]", str(run["model"]).rstrip("/\\"))[-1]
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-.")[:60] or "x"
             for p in (run["task"], model, run["run_id"])]
    return "-".join(parts) + (".json.gz" if compress else ".json")


def dump(doc: dict[str, Any]) -> str:
    """The file's text: objects spread over lines, every list of plain values (a metric's scores,
    the positions, a timing) and every flat row (a checkpoint, a summary) on one line, so a pull
    request's diff stays readable and short."""

    def text(value: Any, depth: int) -> str:
        pad, inner = " " * depth, " " * (depth + 1)
        flat = isinstance(value, dict) and not any(isinstance(v, (dict, list))
                                                   for v in value.values())
        if isinstance(value, dict) and value and not (flat and depth > 1):
            items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {text(v, depth + 1)}"
                     for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            return ("[\n" + ",\n".join(inner + text(v, depth + 1) for v in value)
                    + f"\n{pad}]")
        return json.dumps(value, ensure_ascii=False, allow_nan=False)

    return text(doc, 0) + "\n"


def write(doc: dict[str, Any], into: Path, compress: bool = False) -> Path:
    """Write ``doc`` into the folder ``into`` under :func:`file_name`; never over an existing
    file."""
    into.mkdir(parents=True, exist_ok=True)
    path = into / file_name(doc, compress)
    data = dump(doc).encode("utf-8")
    try:
        with path.open("xb") as handle:
            # mtime 0: the same submission compresses to the same bytes
            handle.write(gzip.compress(data, mtime=0) if compress else data)
    except FileExistsError:
        raise SubmissionError(f"{path} exists (run {doc['run']['run_id']} was submitted before); "
                              "remove it to submit the run again, or choose another --into") \
            from None
    return path


# -- reading and validating --------------------------------------------------------------------
class _Constant(ValueError):
    """NaN or Infinity in a file: Python's reader accepts them, JSON (and the hashes) do not."""


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def read(path: Path) -> dict[str, Any]:
    """The document of a submission file (``.json`` or ``.json.gz``), not yet validated."""
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        doc = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg})") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: cannot be read ({exc})") from None
    except _Constant as exc:
        raise SubmissionError(f"{path}: holds {exc}, which is not JSON (a missing score is "
                              "null)") from None
    if not isinstance(doc, dict):
        raise SubmissionError(f"{path}: not an editbench submission (a JSON object is expected)")
    return doc


_NUMBER = (int, float)
_TEXT_OR_NONE = (str, type(None))
#: every field a reader relies on, with its type: ``a.b`` is b inside a; ``a[].b`` is b in each
#: item of the list a
FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("submitted", str), ("submitted_with", dict), ("run", dict), ("run.run_id", str),
    ("run.created", str), ("run.task", str), ("run.model", str),
    ("run.model_revision", _TEXT_OR_NONE), ("run.seed", int), ("run.n_edits", int),
    ("run.dataset_hash", str), ("run.config", dict), ("run.baseline", dict), ("protocol", dict),
    ("code", dict), ("code.editbench", _TEXT_OR_NONE), ("code.git_sha", _TEXT_OR_NONE),
    ("code.identity", _TEXT_OR_NONE), ("code.versions", dict), ("hardware", dict),
    ("hardware.device", str), ("hardware.sessions", list), ("hardware.sessions[].method", str),
    ("hardware.sessions[].started", str), ("hardware.sessions[].numerics", dict),
    ("metrics", list), ("metrics[].name", str), ("metrics[].description", str),
    ("metrics[].higher_is_better", bool), ("edit_batches", list), ("edit_batches[]", list),
    ("methods", list), ("methods[].method", str), ("methods[].config", dict),
    ("methods[].config_hash", str), ("methods[].status", str),
    ("methods[].diverged_at", (int, type(None))), ("methods[].error", _TEXT_OR_NONE),
    ("methods[].updated", str), ("checkpoints", list), ("checkpoints[].method", str),
    ("checkpoints[].n_edits", int), ("checkpoints[].edit_seconds", _NUMBER),
    ("checkpoints[].eval_seconds", _NUMBER), ("checkpoints[].seconds_per_edit", _NUMBER),
    ("checkpoints[].peak_memory_bytes", int), ("checkpoints[].created", str),
    ("timings", list), ("timings[]", list), ("capability", list),
    ("capability[].method", str), ("capability[].n_edits", int), ("capability[].name", str),
    ("capability[].n", int), ("capability[].accuracy", _NUMBER), ("scores", dict),
    ("scores.uids", list), ("scores.cells", list), ("scores.cells[].method", str),
    ("scores.cells[].n_edits", int), ("scores.cells[].positions", list),
    ("scores.cells[].values", dict), ("summaries", list), ("hashes", dict),
    ("hashes.scores_sha256", str), ("hashes.content_sha256", str),
)
STATUSES = ("done", "diverged", "failed")


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {"str": "text", "int": "an integer", "float": "a number", "bool": "true or false",
             "dict": "an object", "list": "a list", "NoneType": "null"}
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if int in kinds and float in kinds:
        kinds = tuple(k for k in kinds if k is not int)
    return " or ".join(dict.fromkeys(names.get(k.__name__, k.__name__) for k in kinds))


def _has_type(value: Any, expected: type | tuple[type, ...]) -> bool:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in kinds:  # JSON true is not a number here
        return False
    return isinstance(value, kinds)


def _check_fields(doc: dict[str, Any], problem: Callable[[str, str], None]) -> None:
    def walk(value: Any, parts: list[str], where: str, expected) -> None:
        if not parts:
            if not _has_type(value, expected):
                problem(where, f"must be {_type_name(expected)}, not {json.dumps(value)[:40]}")
            return
        head, rest = parts[0], parts[1:]
        listed = head.endswith("[]")
        key = head.removesuffix("[]")
        if key:
            if not isinstance(value, dict):
                return  # the parent's own line says so
            if key not in value:
                problem(f"{where}.{key}".lstrip("."), "missing")
                return
            value, where = value[key], f"{where}.{key}".lstrip(".")
        if listed:
            if not isinstance(value, list):
                return
            for i, item in enumerate(value):
                walk(item, rest, f"{where}[{i}]", expected)
        else:
            walk(value, rest, where, expected)

    for name, expected in FIELDS:
        walk(doc, name.split("."), "", expected)


def _close(a: float | None, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return _has_type(b, _NUMBER) and math.isclose(a, b, rel_tol=SUMMARY_TOLERANCE, abs_tol=1e-12)


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a submission document, as (field, what is wrong); empty when it is
    valid."""
    found: list[tuple[str, str]] = []

    def problem(field: str, text: str) -> None:
        found.append((field, text))

    if doc.get("format") != FORMAT:
        return [("format", f"must be {FORMAT!r}: this is not an editbench submission")]
    if doc.get("schema") != SCHEMA:
        return [("schema", f"is {doc.get('schema')!r}; this editbench reads schema {SCHEMA} "
                           "(submit the run again with this version)")]
    _check_fields(doc, problem)
    shapes = (("timings", "[method, phase, step, seconds]", (str, str, int, _NUMBER)),
              ("edit_batches", "[start, stop]", (int, int)))
    for name, shape, kinds in shapes:
        for i, item in enumerate(doc.get(name) if isinstance(doc.get(name), list) else []):
            if isinstance(item, list) and (len(item) != len(kinds) or not all(
                    _has_type(v, k) for v, k in zip(item, kinds))):
                problem(f"{name}[{i}]", f"must be {shape}")
    uids = doc["scores"].get("uids") if isinstance(doc.get("scores"), dict) else None
    for i, uid in enumerate(uids if isinstance(uids, list) else []):
        if not _has_type(uid, _TEXT_OR_NONE):
            problem(f"scores.uids[{i}]", "must be text or null")
    if found:  # the checks below read these fields
        return found
    run, config, scores = doc["run"], doc["run"]["config"], doc["scores"]
    uids = scores["uids"]
    # the run record agrees with the config it was made from, and the run id is its hash
    for field, key in (("task", "task"), ("model", "model"), ("seed", "seed"),
                       ("n_edits", "edits"), ("dataset_hash", "dataset_hash"),
                       ("model_revision", "model_revision")):
        if key in config or (field == "model_revision" and run[field] is not None):
            if run[field] != config.get(key):
                problem(f"run.{field}", f"is {run[field]!r} but the run's config says "
                                        f"{config.get(key)!r}")
    if run_id_of(config) != run["run_id"]:
        problem("run.run_id", f"is not the hash of the run's config ({run_id_of(config)}): the "
                              "config was changed after the run")
    stated = config.get("protocol")
    if stated is not None and not isinstance(stated, dict):
        problem("run.config.protocol", "must be an object (a protocol record)")
    else:
        try:  # the boards group runs by it
            from_record(stated, config.get("batch_size"))
        except (TypeError, ValueError, KeyError) as exc:
            problem("run.config.protocol", f"is not a protocol record ({exc})")
        if stated is not None and doc["protocol"] != stated:
            problem("protocol", "differs from the protocol in the run's config")
    # every part refers to methods, metrics and positions that exist
    methods = {m["method"]: m for m in doc["methods"]}
    for i, m in enumerate(doc["methods"]):
        if m["status"] not in STATUSES:
            problem(f"methods[{i}].status", f"is {m['status']!r}; a submitted method is one of "
                                            f"{', '.join(STATUSES)} (finish the run first)")
    metric_names = {m["name"] for m in doc["metrics"]}
    stored = set()
    for i, cell in enumerate(scores["cells"]):
        where = f"scores.cells[{i}]"
        key = (cell["method"], cell["n_edits"])
        if key in stored:
            problem(where, f"{cell['method']} at {cell['n_edits']} edits appears twice")
        stored.add(key)
        if cell["method"] not in methods:
            problem(f"{where}.method", f"{cell['method']!r} is not among the methods")
        if not 0 < cell["n_edits"] <= run["n_edits"]:
            problem(f"{where}.n_edits", f"{cell['n_edits']} is outside 1..{run['n_edits']}")
        positions = cell["positions"]
        if len(set(positions)) != len(positions) or not all(
                _has_type(p, int) and 0 <= p < min(cell["n_edits"], len(uids)) and uids[p]
                for p in positions):
            problem(f"{where}.positions", f"must be distinct edits made by then "
                                          f"(0..{cell['n_edits'] - 1}), each with a uid")
            continue
        for metric, values in cell["values"].items():
            if metric not in metric_names:
                problem(f"{where}.values.{metric}", "is not in the metric catalogue (metrics)")
            if not isinstance(values, list) or len(values) != len(positions) or not all(
                    v is None or _has_type(v, _NUMBER) for v in values):
                problem(f"{where}.values.{metric}",
                        f"must be {len(positions)} numbers (or null), one per position")
    if any(f.startswith("scores.cells") for f, _ in found):
        return found
    checkpoints = {(c["method"], c["n_edits"]) for c in doc["checkpoints"]}
    for method, n_edits in sorted(stored - checkpoints):
        problem("checkpoints", f"{method} at {n_edits} edits has scores but no checkpoint")
    for method, n_edits in sorted(checkpoints - stored):
        problem("checkpoints", f"{method} at {n_edits} edits has no scores")
    # the hashes and the summaries, recomputed
    if scores_hash(doc) != doc["hashes"]["scores_sha256"]:
        problem("hashes.scores_sha256", "does not match the per-edit scores: a score was changed "
                                        "after submitting")
    expected = {(s["method"], s["n_edits"], s["metric"]): s for s in summaries(doc)}
    given = {}
    for i, s in enumerate(doc["summaries"]):
        if not isinstance(s, dict) or not {"method", "n_edits", "metric", "n", "mean"} <= set(s):
            problem(f"summaries[{i}]", "must hold method, n_edits, metric, n and mean")
            continue
        given[(s["method"], s["n_edits"], s["metric"])] = s
    for key in sorted(set(expected) | set(given), key=str):
        want, have = expected.get(key), given.get(key)
        name = f"summaries ({key[0]}, {key[1]} edits, {key[2]})"
        if have is None:
            problem(name, "missing")
        elif want is None:
            problem(name, "has no per-edit scores behind it")
        elif have["n"] != want["n"] or not _close(want["mean"], have["mean"]):
            problem(name, f"says mean {have['mean']} over {have['n']} edits; the per-edit scores "
                          f"give {want['mean']} over {want['n']}")
    if content_hash(doc) != doc["hashes"]["content_sha256"]:
        problem("hashes.content_sha256", "does not match the document: it was changed after "
                                         "submitting")
    return found


def validate(path: Path) -> list[str]:
    """One line per problem of the submission file ``path``, each naming the file and the field;
    empty when it is valid."""
    try:
        doc = read(path)
    except SubmissionError as exc:
        return [str(exc)]
    return [f"{path}: {field}: {text}" for field, text in problems(doc)]


def duplicates(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, line) for each submission whose run an earlier file already holds: the site shows
    one."""
    seen: dict[str, Path] = {}
    lines = []
    for path in paths:
        try:
            run_id = read(path).get("run", {}).get("run_id")
        except (SubmissionError, AttributeError):
            continue  # validate says why
        if run_id in seen:
            lines.append((path, f"{path}: run.run_id: run {run_id} is also {seen[run_id]} "
                                "(the same config and seed); keep one"))
        seen.setdefault(run_id, path)
    return lines


def load(path: Path) -> dict[str, Any]:
    """A valid submission's document; SubmissionError naming the first problem otherwise."""
    doc = read(path)
    found = problems(doc)
    if found:
        field, text = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise SubmissionError(f"{path}: {field}: {text}{more}; editbench validate {path} lists "
                              "every problem")
    return doc


# -- the frames a store gives ------------------------------------------------------------------
def submission_frames(doc: dict[str, Any], source: Path) -> dict[str, pd.DataFrame]:
    """A valid submission as the frames of ``ResultsStore`` (``reports/collect.py``'s FRAMES),
    plus the run's ``submission`` record (its file and hashes) for the provenance it shows."""
    run, code = doc["run"], doc["code"]
    run_id = run["run_id"]

    def frame(rows: list, columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame([[run_id, *r] for r in rows], columns=["run_id", *columns])

    scores = frame(list(score_rows(doc)),
                   ["method", "n_edits", "position", "uid", "metric", "value"])
    runs = pd.DataFrame([{
        "run_id": run_id, "created": run["created"], "task": run["task"], "model": run["model"],
        "config": run["config"], "versions": code["versions"], "device": doc["hardware"]["device"],
        "seed": run["seed"], "git_sha": code["git_sha"], "dataset_hash": run["dataset_hash"],
        "n_edits": run["n_edits"], "baseline": run["baseline"],
        "submission": {"file": str(source), "submitted": doc["submitted"],
                       "submitted_with": doc["submitted_with"], "code_identity": code["identity"],
                       **doc["hashes"]},
    }])
    return {
        "runs": runs,
        "cells": frame([(m["method"], json.dumps(m["config"]), m["config_hash"], m["status"],
                         m["diverged_at"], m["error"], m["updated"]) for m in doc["methods"]],
                       ["method", "method_config", "config_hash", "status", "diverged_at",
                        "error", "updated"]),
        "checkpoints": frame([(c["method"], c["n_edits"], float(c["edit_seconds"]),
                               float(c["eval_seconds"]), float(c["seconds_per_edit"]),
                               c["peak_memory_bytes"], c["created"])
                              for c in doc["checkpoints"]],
                             ["method", "n_edits", "edit_seconds", "eval_seconds",
                              "seconds_per_edit", "peak_memory_bytes", "created"]),
        "scores": scores.sort_values(["method", "n_edits", "position", "metric"],
                                     ignore_index=True),
        "timings": frame([tuple(t) for t in doc["timings"]],
                         ["method", "phase", "step", "seconds"]),
        "capability": frame([(c["method"], c["n_edits"], c["name"], c["n"], c["accuracy"])
                             for c in doc["capability"]],
                            ["method", "n_edits", "name", "n", "accuracy"]),
        "metrics": frame([(i, m["name"], m["description"], m["higher_is_better"])
                          for i, m in enumerate(doc["metrics"])],
                         ["ord", "name", "description", "higher_is_better"]),
        "edit_batches": frame([(i, start, stop) for i, (start, stop)
                               in enumerate(doc["edit_batches"])], ["step", "start", "stop"]),
        "sessions": frame([(s["method"], s["started"], s["numerics"])
                           for s in doc["hardware"]["sessions"]],
                          ["method", "started", "numerics"]),
    }
