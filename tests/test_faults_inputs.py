"""Fault injection, in process: bad inputs, damaged snapshots and stores, downloads, locks of cache
entries, and how errors reach the user. Each case ends in a correct result or one line that names
the culprit (``Error: ...``, no traceback); ``--debug`` shows the traceback instead."""

from __future__ import annotations

import errno
import http.server
import json
import logging
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from editbench.core.cache import Busy, building, exclusive_lock, safe_name
from editbench.core.records import ScoringPair
from editbench.core.sources import RecordError, download, read_source
from editbench.core.store import load_results
from editbench.harness.cli.group import explain, main
from editbench.methods import METHODS

GOOD = {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
        "target_new": "English"}


def _run_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--task", "pocket", "--param", "pocket.n_entities=20", "--model", str(model),
            "--methods", "ft-m", "--edits", "8", "--batch-size", "2", "--checkpoints", "2,4,6,8",
            "--device", "cpu", "--param", "ft-m.stop_loss=0", "--out", str(out), *extra]


def error_line(result) -> str:
    """The one 'Error:' line of a failed command; no traceback anywhere."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _bad_inputs(tmp: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "folder").mkdir()
    (tmp / "empty-model").mkdir()
    (tmp / "out-file").write_text("x")
    latin = tmp / "latin.jsonl"
    latin.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps(
        {**GOOD, "prompt": "Léon is", "subject": "Léon"}, ensure_ascii=False
    ).encode("latin-1"))
    listed_uid = tmp / "uid.jsonl"
    listed_uid.write_text(json.dumps({**GOOD, "uid": ["a"]}))

    def run(
        *extra: str, model: str = str(model), out: str = str(tmp / "out"),
        task: tuple[str, ...] = ("--param", "pocket.n_entities=20")
    ) -> list[str]:
        return ["run", "--model", model, *task, "--methods", "ft-m", "--device", "cpu",
                "--out", out, *extra]

    return {
        "param for a method not in the run": (
            run("--param", "ftm.lr=1"), "'ftm' is neither the task nor a method"
        ),
        "inf learning rate": (
            run("--param", "ft-m.lr=inf"), "ft-m.lr: 'inf' is not a finite number"
        ),
        "nan norm constraint": (
            run("--param", "ft-m.norm_constraint=nan"), "'nan' is not a finite number"
        ),
        "nan task setting": (
            run(task=("--task", "zsre", "--data", str(latin),
                      "--param", "zsre.train_fraction=nan")),
            "zsre.train_fraction: 'nan' is not a finite number"
        ),
        "negative limit": (
            run("--limit", "-1"), "--limit must be an integer of at least 1, got -1"
        ),
        "data is a folder": (
            run(task=("--task", "zsre", "--data", str(tmp / "folder"))), "is a folder, not a file"
        ),
        "not UTF-8": (run(task=("--task", str(latin))), "latin.jsonl:2: not UTF-8 text"),
        "uid that is a list": (
            run(task=("--task", str(listed_uid))), "field 'uid': must be a string or an integer"
        ),
        "out is a file": (run(out=str(tmp / "out-file")), "is a file; results go to a folder"),
        "restart of a method not in the run": (
            run("--restart", "ft-l"), "--restart ft-l: not a method of this run"
        ),
        "empty model folder": (run(model=str(tmp / "empty-model")), "holds no config.json"),
        "relative path taken for a hub id": (
            run(model="models/mine"), "'models/mine': no such local folder"
        ),
    }


CASES = ["param for a method not in the run", "inf learning rate", "nan norm constraint",
         "nan task setting", "negative limit", "data is a folder", "not UTF-8",
         "uid that is a list", "out is a file", "restart of a method not in the run",
         "empty model folder", "relative path taken for a hub id"]


@pytest.mark.parametrize("case", CASES)
def test_each_bad_input_is_one_line_naming_it(case, tmp_path, micro_gpt2, monkeypatch):
    import huggingface_hub.constants

    # a hub name fails at once
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args, message = _bad_inputs(tmp_path, micro_gpt2)[case]
    line = error_line(CliRunner().invoke(main, args))
    assert message in line
    assert not (tmp_path / "out" / "results.sqlite").exists()  # refused before anything was stored


def test_debug_shows_the_traceback_instead(tmp_path, micro_gpt2):
    result = CliRunner().invoke(main, [
        "--debug", "run", "--model", str(micro_gpt2), "--limit", "-1", "--out", str(tmp_path),
    ])
    assert isinstance(result.exception, ValueError) and "--limit" in str(result.exception)


@pytest.mark.parametrize("exc, words", [
    (MemoryError(), ["out of memory", "--batch-size"]),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     ["out of memory", "2.00 GiB"]),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes"),
     ["out of memory"]),
    (OSError(errno.ENOSPC, "No space left on device", "/o/snapshots/x"),
     ["no space left writing /o/snapshots/x"]),
    (OSError(errno.EFBIG, "File too large", "/o/x"), ["no space left writing /o/x", "resume"]),
    (OSError(errno.EROFS, "Read-only file system", "/o"),
     ["/o is on a read-only file system", "--out"]),
    (PermissionError(errno.EACCES, "Permission denied", "/o/.lock"),
     ["permission denied: /o/.lock"]),
    (sqlite3.OperationalError("database or disk is full"), ["results store", "disk is full"]),
])
def test_routine_failures_are_explained_in_one_line(exc, words):
    message = explain(exc)
    assert message is not None and "\n" not in message
    for word in words:
        assert word in message


def test_a_bug_keeps_its_traceback():
    assert explain(TypeError("unsupported operand")) is None
    assert explain(RuntimeError("an internal invariant broke")) is None


# -- damaged snapshots and --restart ---------------------------------------------------------------
def _fail_after(monkeypatch, batches: int, exc: BaseException) -> None:
    """Make ft-m raise ``exc`` from its ``batches + 1``-th batch on."""
    cls = METHODS["ft-m"]
    original, calls = cls.apply, []

    def apply(self, batch):
        calls.append(1)
        if len(calls) > batches:
            raise exc
        return original(self, batch)

    monkeypatch.setattr(cls, "apply", apply)


def _scores(folder: Path) -> pd.DataFrame:
    store = load_results(folder)
    try:
        return (
            store.scores().drop(columns="run_id").sort_values(["n_edits", "position", "metric"])
            .reset_index(drop=True)
        )
    finally:
        store.close()


def _snapshot(out: Path, name: str) -> Path:
    (path,) = out.glob(f"snapshots/*/ft-m/edits-000000004/{name}")
    return path


def _wrong_values(path: Path) -> None:
    # valid file, other values
    save_file({k: torch.zeros_like(v) for k, v in load_file(path).items()}, path)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, name, problem", [
    (_wrong_values, "weights.safetensors", "its SHA-256 differs"),
    (_truncated, "state.safetensors", "its SHA-256 differs"),
    (Path.unlink, "rng.safetensors", "is missing"),
])
def test_a_damaged_snapshot_fails_naming_the_file_and_restart_runs_the_method_again(
        damage, name, problem, tmp_path, micro_llama, monkeypatch, caplog):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        # a routine failure after the checkpoint at 4
        _fail_after(patch, 2, MemoryError("simulated"))
        first = CliRunner().invoke(main, _run_args(micro_llama, out))
    assert first.exit_code == 1 and "ft-m: failed: MemoryError: simulated" in first.output
    failed = [r for r in caplog.records if r.getMessage().startswith("ft-m failed")]
    assert failed and not failed[0].exc_info  # one line in the log, no traceback
    path = _snapshot(out, name)
    damage(path)
    resumed = CliRunner().invoke(main, _run_args(micro_llama, out))
    assert resumed.exit_code == 1 and "Traceback" not in resumed.output
    (line,) = [line for line in resumed.output.splitlines() if line.startswith("ft-m: failed")]
    assert str(path) in line and problem in line and "--restart ft-m" in line
    # nothing was scored from it
    assert sorted(load_results(out).checkpoints()["n_edits"]) == [2, 4]
    if damage is not _wrong_values:
        return
    restarted = CliRunner().invoke(main, _run_args(micro_llama, out, "--restart", "ft-m"))
    assert restarted.exit_code == 0, restarted.output
    clean = CliRunner().invoke(main, _run_args(micro_llama, tmp_path / "clean"))
    assert clean.exit_code == 0, clean.output
    pd.testing.assert_frame_equal(_scores(out), _scores(tmp_path / "clean"))


def test_a_method_out_of_memory_is_recorded_and_the_others_go_on(
    tmp_path, micro_llama, monkeypatch
):
    _fail_after(
        monkeypatch,
        0,
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
    )
    args = _run_args(micro_llama, tmp_path / "out")
    args[args.index("ft-m")] = "ft-m,ft-l"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "ft-m: failed: OutOfMemoryError: CUDA out of memory" in result.output
    statuses = load_results(tmp_path / "out").cells().set_index("method")["status"].to_dict()
    assert statuses == {"ft-m": "failed", "ft-l": "done"}


def test_other_settings_in_the_store_point_to_restart(tmp_path, micro_llama):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, _run_args(micro_llama, out)).exit_code == 0
    changed = _run_args(micro_llama, out, "--param", "ft-m.lr=1e-3")
    assert "--restart ft-m to drop them" in error_line(CliRunner().invoke(main, changed))
    assert CliRunner().invoke(main, [*changed, "--restart", "ft-m"]).exit_code == 0
    assert load_results(out).cells()["method_config"].map(json.loads).iloc[0]["lr"] == 1e-3


# -- damaged stores --------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty sqlite"])
def test_a_damaged_store_is_one_line_for_report_and_run(damage, tmp_path, micro_llama):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, _run_args(micro_llama, out)).exit_code == 0
    db = out / "results.sqlite"
    for side in out.glob("results.sqlite-*"):
        side.unlink()
    if damage == "random bytes":
        db.write_bytes(bytes(range(256)) * 64)
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[: 3 * 4096])
    else:
        db.unlink()
        sqlite3.connect(db).close()
    report = error_line(CliRunner().invoke(main, ["report", str(out)]))
    assert str(db) in report
    # what a run killed while creating its store leaves: the next run sets it up
    if damage == "empty sqlite":
        assert CliRunner().invoke(main, _run_args(micro_llama, out)).exit_code == 0
        return
    run = error_line(CliRunner().invoke(main, _run_args(micro_llama, out)))
    assert str(db) in run


# -- downloads -------------------------------------------------------------------------------------
class _Server(http.server.BaseHTTPRequestHandler):
    responses: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 (the http.server API)
        content_type, body = self.responses.get(self.path, ("text/plain", b""))
        self.send_response(200 if self.path in self.responses else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Server.responses = {}
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Server.responses
    httpd.shutdown()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_bad_download_is_refused_and_not_cached(server, tmp_path):
    base, responses = server
    good = json.dumps([GOOD]).encode()
    responses["/page.json"] = ("text/html; charset=utf-8", b"<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(RecordError, match="page.json: the server sent an HTML page"):
        read_source(f"{base}/page.json", tmp_path)
    responses["/data.json"] = ("application/json", b'[{"prompt": ')
    with pytest.raises(RecordError, match="data.json: not valid JSON"):
        read_source(f"{base}/data.json", tmp_path)
    assert _files(tmp_path) == []  # neither was cached, and no temp file is left
    responses["/data.json"] = ("application/json", good)  # fixed on the server: fetched afresh
    assert read_source(f"{base}/data.json", tmp_path).items == [GOOD]
    assert [Path(f).name for f in _files(tmp_path)] == ["data.json"]


@pytest.mark.parametrize("tail", ["/.", "/..", "/", "/%2e%2e"])
def test_urls_ending_in_dots_get_a_file_inside_the_cache(server, tmp_path, tail):
    base, responses = server
    responses[f"/sets{tail}"] = ("application/json", json.dumps([GOOD]).encode())
    path = download(f"{base}/sets{tail}", tmp_path)
    assert path.is_file() and path.resolve().parent.parent == (tmp_path / "downloads").resolve()
    assert not path.name.startswith(".")
    assert _files(tmp_path) == [str(path.relative_to(tmp_path))]


def test_key_statistics_stay_in_the_cache_whatever_stats_hub_says(tmp_path):
    from editbench.methods.locate.stats import _stats_path, resolve_corpus

    corpus = resolve_corpus("hub", "wikitext:../../../../../tmp/evil", None)
    path = _stats_path(tmp_path, "abc", corpus.name, 100, "model.layers.0.mlp.down_proj",
                      "cpu-avx512-t1")
    assert path.resolve().is_relative_to((tmp_path / "key-stats").resolve())
    assert path.name == "model.layers.0.mlp.down_proj.safetensors"
    assert safe_name("..") != safe_name("_") and safe_name("a/b") != safe_name("a_b")
    # existing caches keep their names
    assert safe_name("task-pocket-1a2b-n100") == "task-pocket-1a2b-n100"


# -- CSV -------------------------------------------------------------------------------------------
def test_csv_cells_cannot_start_a_formula(tmp_path, monkeypatch):
    from editbench.reports import tables

    frame = pd.DataFrame({"method": ["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "ft-m"],
                          "mean": [-0.5, 0.1, 0.2, 0.3, 0.4]})
    monkeypatch.setattr(tables, "boards_frame", lambda boards: frame)
    (tmp_path / "t.csv").write_text(tables.csv_text([]), encoding="utf-8")
    written = pd.read_csv(tmp_path / "t.csv")
    assert written["method"].tolist() == [
        "'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)", "ft-m"
    ]
    assert written["mean"].tolist() == [-0.5, 0.1, 0.2, 0.3, 0.4]  # numbers stay numbers


# -- prompts longer than the model's positions -----------------------------------------------------
def _short_model(family: str, tokenizer):
    import transformers as tf

    common = dict(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        config = tf.LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=8, **common
        )
    else:
        config = tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8, **common)
    return tf.AutoModelForCausalLM.from_config(config).eval()


def test_a_prompt_longer_than_the_positions_is_named(world_tokenizer, caplog):
    from editbench.core.probe import HFProbe

    long = ScoringPair(
        "Fact: As everyone knows, the home city of Kalo Mirve is far away from here", "Fengal Vale"
    )
    short = ScoringPair("Kalo", "Vale")
    probe = HFProbe(_short_model("llama", world_tokenizer), world_tokenizer, torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        probe.score([short, long])
        probe.score([long])
    warnings = [r.getMessage() for r in caplog.records if "positions" in r.getMessage()]
    assert len(warnings) == 1 and repr(long.prompt) in warnings[0] and "8 positions" in warnings[0]
    gpt2 = HFProbe(_short_model("gpt2", world_tokenizer), world_tokenizer, torch.device("cpu"))
    with pytest.raises(ValueError, match="longer than the model's 8 positions"):
        gpt2.score([long])


# -- one builder per cache entry -------------------------------------------------------------------
def _hold(lock_context, held: threading.Event, release: threading.Event) -> threading.Thread:
    def hold():
        with lock_context:
            held.set()
            release.wait(30)
    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30)
    return thread


def test_a_held_lock_names_its_holder_or_is_waited_for(tmp_path, caplog):
    import os

    held, release = threading.Event(), threading.Event()
    thread = _hold(exclusive_lock(tmp_path / "x.lock", "the thing", wait=False), held, release)
    with pytest.raises(Busy, match=f"the thing is in use by process {os.getpid()} on "):
        with exclusive_lock(tmp_path / "x.lock", "the thing", wait=False):
            pass
    threading.Timer(0.3, release.set).start()
    with caplog.at_level(logging.INFO), exclusive_lock(tmp_path / "x.lock", "the thing", wait=True):
        assert release.is_set()  # it waited for the holder
    thread.join()
    assert any(f"waiting for process {os.getpid()}" in r.getMessage() for r in caplog.records)


def test_key_statistics_are_computed_once_while_another_process_builds_them(
    tmp_path, micro_llama, caplog
):
    from editbench.core.models import load_model, model_fingerprint
    from editbench.core.tokenize import PairEncoder
    from editbench.methods.locate import stats

    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    corpus = stats.Corpus("unit", ["Kalo Mirve lives in Fengal Vale"] * 4)
    module = "model.layers.0.mlp.down_proj"
    numerics = stats.numerics_tag(torch.device("cpu"))
    folder = stats._stats_folder(tmp_path, model_fingerprint(model), corpus.name, 4, numerics)
    reference = stats.key_second_moments(
        model, PairEncoder(tokenizer), [module], corpus, 4, tmp_path / "other", torch.device("cpu")
    )[module].mom2
    held, release = threading.Event(), threading.Event()

    def build_elsewhere():  # the other builder writes the entry, then releases the lock
        fingerprint = model_fingerprint(model)
        source = stats._stats_path(tmp_path / "other", fingerprint, corpus.name, 4, module,
                                   numerics)
        stats.atomic_write_bytes(
            stats._stats_path(tmp_path, fingerprint, corpus.name, 4, module, numerics),
            source.read_bytes()
        )
        release.set()

    thread = _hold(building(folder, "key statistics"), held, release)
    threading.Timer(0.3, build_elsewhere).start()
    with caplog.at_level(logging.INFO):
        found = stats.key_second_moments(
            model, PairEncoder(tokenizer), [module], corpus, 4, tmp_path, torch.device("cpu")
        )
    thread.join()
    messages = [r.getMessage() for r in caplog.records]
    assert any("waiting for process" in m and "key statistics" in m for m in messages)
    assert not any(
        m.startswith("computed key statistics") and str(tmp_path / "key-stats") in m
        for m in messages
    )
    assert torch.equal(found[module].mom2, reference)


def test_a_trained_editor_is_trained_once_while_another_process_trains_it(
    tmp_path, micro_llama, monkeypatch, caplog
):
    from editbench.core.models import ModelLayout, load_model
    from editbench.core.task import TaskOptions
    from editbench.methods import EditContext
    from editbench.methods.hypernet import storage
    from editbench.tasks.pocket import PocketConfig, PocketTask

    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    task = PocketTask(TaskOptions(), PocketConfig(n_entities=20))
    ctx = EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=tmp_path, task=task, seed=0, generator=torch.Generator().manual_seed(0),
        train_records=lambda: task.load("train")
    )
    method = METHODS["mend"](METHODS["mend"].Config(), ctx)
    folder, trained, loaded = method.cache_folder(), [], []
    monkeypatch.setattr(type(method), "fit", lambda self, f, records: trained.append(f))
    monkeypatch.setattr(storage, "load_editor", lambda self, f: loaded.append(f))
    held, release = threading.Event(), threading.Event()

    def finish_elsewhere():
        folder.mkdir(parents=True)
        for name in (storage.EDITOR_FILE, storage.CONFIG_FILE):
            (folder / name).write_text("{}")
        release.set()

    thread = _hold(building(folder, "the editor"), held, release)
    threading.Timer(0.3, finish_elsewhere).start()
    with caplog.at_level(logging.INFO):
        method.prepare()
    thread.join()
    assert trained == [] and loaded == [folder]  # it waited, then used the other's editor
    assert any("waiting for process" in r.getMessage() for r in caplog.records)
