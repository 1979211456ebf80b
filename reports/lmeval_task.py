"""``editbench export --lm-eval``: a run's edits as an lm-evaluation-harness task folder.

Any model saved by a run (``--save-model N``: ``OUT/models/<run>/<method>/edits-N``), or any other
model, can then be scored on the run's edits by lm-evaluation-harness (0.4.x) itself::

    lm_eval --model hf --model_args pretrained=OUT/models/... --include_path DIR \\
        --tasks editbench_<run>

The folder holds one YAML config per task, one JSONL file of documents per task, ``edits.jsonl``
(each edit's stored text, to read), a loader (``editbench_data.py``, which reads the JSONL files
beside it, so the folder can be moved) and a README. The tasks, each tagged ``editbench_<run>``:

- ``_efficacy``, ``_generalization`` (one document per paraphrase), ``_portability`` (where the
  edits have questions): ``output_type: loglikelihood`` of the target after the prompt and one
  space (editbench's teacher-forced pair; lm-eval adds no delimiter to a loglikelihood target, so
  the documents' ``continuation`` holds the space), metric ``acc``: lm-eval's ``is_greedy``,
  every target token the model's top-1, which is an editbench prompt that passes teacher-forced
  (token accuracy 1.0; ``efficacy_acc`` is its per-edit token share);
- ``_locality``: the same at each neighbourhood prompt, of the *unedited* model's greedy answer
  where the run stored it (``--gen-eval``), so ``acc`` is the share of neighbours whose answer the
  edit left as it was; of the dataset's answer otherwise (the README says which);
- ``_efficacy_gen``, ``_generalization_gen``, ``_locality_gen``: ``generate_until`` from the
  prompt the run decoded from (``Task.generation_prompt``), greedy, to a newline, and
  ``exact_match`` after the run's answer normalisation, written as lm-eval's ``regexes_to_ignore``
  (``harness/evaluation/generated.py``: lower case, articles dropped, spaces collapsed, outer
  punctuation stripped; the ``wild`` rule drops every punctuation character). lm-eval gives an
  answer the run's token cap rather than the target's length plus three tokens, so an answer that
  runs on past the target can differ.

Reads the store only (``edit_texts``, and the unedited answers in ``base_generations``); nothing a
user owns is overwritten: the folder must be new, empty, or one this export wrote (its
``editbench-export.json``), whose files are then replaced.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: the file that marks a folder as one this export wrote, and lists what it wrote
MARKER = "editbench-export.json"
LOADER = "editbench_data.py"
#: the loader lm-eval calls (``custom_dataset``): the JSONL file beside it as the ``test`` split
LOADER_SOURCE = '''"""Written by `editbench export --lm-eval`: lm-evaluation-harness loads each
task's documents with this (custom_dataset), from the JSONL file named in the task's
dataset_kwargs, beside this file, so the folder can be moved."""

import json
from pathlib import Path


def load(file, **_):
    import datasets

    lines = (Path(__file__).with_name(file).read_text(encoding="utf-8")).splitlines()
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list([json.loads(line) for line in lines if line])})
'''
_PUNCTUATION = "[" + "".join("\\" + c for c in string.punctuation) + r"\s]"
#: editbench's answer normalisations (``normalise_answer``, ``normalise_wild``) as lm-eval's
#: exact_match options; its regexes are applied in order, before ``ignore_case``
NORMALISATIONS: dict[str, dict[str, Any]] = {
    "editbench": {"ignore_case": True, "ignore_punctuation": False,
                  "regexes_to_ignore": [r"(?i)\b(a|an|the)\b", r"(?<=\s)\s+",
                                        f"^{_PUNCTUATION}+", f"{_PUNCTUATION}+$"]},
    "wild": {"ignore_case": True, "ignore_punctuation": True,
             "regexes_to_ignore": [r"(?i)\b(a|an|the)\b", r"(?<=\s)\s+", r"^\s+", r"\s+$"]},
}
#: the answer rules' stop texts (``core/generate.py``: ANSWER_RULES)
STOPS = {"editbench": ["\n"], "wild": ["\n", "."]}


class ExportError(ValueError):
    """The store cannot give what the export needs; the message names the run and what would
    work."""


@dataclass(frozen=True)
class LmEvalExport:
    folder: Path
    run_id: str
    tag: str
    tasks: dict[str, int]  # task name -> documents
    locality_answers: str  # "unedited" or "dataset"


def _choose_run(runs, run_id: str | None, results: Path):
    ids = list(runs["run_id"])
    if not ids:
        raise ExportError(f"{results} holds no runs")
    if run_id is None:
        if len(ids) > 1:
            raise ExportError(f"{results} holds {len(ids)} runs ({', '.join(i[:8] for i in ids)});"
                              " choose one with --run")
        return runs.iloc[0]
    found = [i for i in ids if i.startswith(run_id)]
    if len(found) != 1:
        raise ExportError(f"--run {run_id}: {'no run' if not found else 'several runs'} of "
                          f"{results} {'begins' if not found else 'begin'} so (runs: "
                          f"{', '.join(i[:8] for i in ids)})")
    return runs[runs["run_id"] == found[0]].iloc[0]


def _verdicts(store, run_id: str, method: str | None, n_edits: int) -> dict[tuple, dict]:
    """editbench's own verdicts for ``method`` at checkpoint ``n_edits``, per (position, kind,
    index), to put beside each document: teacher-forced pass (``tf``) and generated pass
    (``gen``); from the stored answers where the run kept them, else efficacy from the scores."""
    if method is None:
        return {}
    samples = store.samples(run_id, method, n_edits)
    found = {(int(r.position), r.kind, int(r.index)): {"tf": bool(r.teacher_forced_pass),
                                                        "gen": bool(r.generated_pass)}
             for r in samples.itertuples(index=False)}
    if found:
        return found
    scores = store.scores()
    chosen = scores[(scores["run_id"] == run_id) & (scores["method"] == method)
                    & (scores["n_edits"] == n_edits) & (scores["metric"] == "efficacy_acc")]
    if chosen.empty:
        raise ExportError(f"--method {method}: run {run_id[:8]} has no checkpoint at {n_edits} "
                          "edits for it; choose --edits at one of its checkpoints")
    return {(int(p), "edit", 0): {"tf": bool(v == 1.0)}
            for p, v in zip(chosen["position"], chosen["value"])}


def lm_eval_documents(results: Path, run_id: str | None = None, n_edits: int | None = None,
                      method: str | None = None) -> tuple[dict[str, Any], dict[str, list[dict]],
                                                          list[dict]]:
    """(the run's row and settings, documents per task suffix, the edits' texts) for the first
    ``n_edits`` edits of a stored run."""
    from ..core.store import load_results

    store = load_results(results)
    try:
        run = _choose_run(store.runs(), run_id, Path(results))
        rid = str(run["run_id"])
        texts = store.edit_texts(rid)
        if texts.empty:
            raise ExportError(f"run {rid[:8]} of {results} holds no edit texts (it was made by an "
                              "editbench before they were stored); rerun its command with this "
                              "editbench and --allow-code-change: it stores them and redoes "
                              "nothing finished (the board marks the code change)")
        n_edits = int(run["n_edits"]) if n_edits is None else n_edits
        if not 1 <= n_edits <= int(run["n_edits"]):
            raise ExportError(f"--edits {n_edits}: run {rid[:8]} made {int(run['n_edits'])} edits;"
                              " choose a count from 1 to that")
        unedited = store.load_base_generations(rid)
        verdicts = _verdicts(store, rid, method, n_edits)
    finally:
        store.close()
    chosen = texts[texts["position"] < n_edits]
    docs: dict[str, list[dict]] = {}
    dataset_answers = 0

    def add(task: str, position: int, record: dict, kind: str, index: int, prompt: str,
            target: str) -> None:
        shown = record.get("generation_prompts", {}).get(prompt, prompt)
        doc = {"position": position, "uid": record.get("uid", ""), "kind": kind, "index": index,
               "prompt": prompt, "generation_prompt": shown, "target": target,
               # lm-eval scores a loglikelihood target as given: the run's space goes in front
               "continuation": f" {target}"}
        if method is not None:  # every document has the field (null where the run scored a
            # sample of its edits and not this one): lm-eval reads a file's fields off its first row
            doc["editbench"] = verdicts.get((position, kind, index))
        docs.setdefault(task, []).append(doc)

    for position, record in zip(chosen["position"], chosen["record"]):
        position = int(position)
        add("efficacy", position, record, "edit", 0, record["prompt"], record["target_new"])
        for i, prompt in enumerate(record.get("paraphrases", [])):
            add("generalization", position, record, "paraphrase", i, prompt, record["target_new"])
        for i, neighbour in enumerate(record.get("neighbours", [])):
            shown = record.get("generation_prompts", {}).get(neighbour["prompt"],
                                                             neighbour["prompt"])
            answer = unedited.get(shown, "").strip()
            if not answer:
                answer, dataset_answers = neighbour["answer"], dataset_answers + 1
            add("locality", position, record, "neighbour", i, neighbour["prompt"], answer)
        for i, question in enumerate(record.get("portability", [])):
            add("portability", position, record, "portability", i, question["prompt"],
                question["answer"])
    settings = {"run": run, "n_edits": n_edits, "method": method,
                "locality_answers": "dataset" if dataset_answers else "unedited"}
    return settings, docs, [{"position": int(p), **r}
                            for p, r in zip(chosen["position"], chosen["record"])]


def check_export_folder(out: Path) -> list[str]:
    """Refuse ``out`` unless it is new, empty or one this export wrote; returns the files an
    earlier export wrote there (to replace)."""
    from ..core.outputs import OutputRefused, check_work_folder

    check_work_folder(out, "--out")
    if not out.is_dir() or not any(out.iterdir()):
        return []
    marker = out / MARKER
    try:
        written = json.loads(marker.read_text("utf-8"))["files"] if marker.is_file() else None
    except (ValueError, KeyError, TypeError):
        written = None
    if not isinstance(written, list):
        raise OutputRefused(f"--out {out} holds files editbench did not write (no {MARKER} of an "
                            "earlier export); choose a new or empty folder")
    return [name for name in written if isinstance(name, str) and "/" not in name
            and name not in ("", ".", "..")]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _task_yaml(name: str, tag: str, file: str, generated: bool, settings: dict) -> str:
    config: dict[str, Any] = {
        "task": name, "tag": [tag], "dataset_kwargs": {"file": file}, "test_split": "test",
        "doc_to_text": "generation_prompt" if generated else "prompt",
        "doc_to_target": "target" if generated else "continuation",
    }
    rule = settings["rule"]
    if generated:
        config["output_type"] = "generate_until"
        config["generation_kwargs"] = {"until": STOPS[rule], "max_gen_toks": settings["max_tokens"],
                                       "do_sample": False, "temperature": 0.0}
        config["metric_list"] = [{"metric": "exact_match", "aggregation": "mean",
                                  "higher_is_better": True, **NORMALISATIONS[rule]}]
    else:
        config["output_type"] = "loglikelihood"
        config["metric_list"] = [{"metric": "acc", "aggregation": "mean",
                                  "higher_is_better": True}]
    config["metadata"] = {"version": 1.0, "editbench_run": settings["run_id"],
                          "editbench_edits": settings["n_edits"]}
    head = ("# Written by `editbench export --lm-eval`; lm-evaluation-harness 0.4.x task.\n"
            f"custom_dataset: !function {LOADER.removesuffix('.py')}.load\n")
    return head + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def write_lm_eval_task(results: Path, out: Path, run_id: str | None = None,
                       n_edits: int | None = None, method: str | None = None) -> LmEvalExport:
    """Write the run's edits as lm-evaluation-harness tasks into ``out`` (see the module's
    docstring)."""
    earlier = check_export_folder(out)
    settings, docs, edits = lm_eval_documents(results, run_id, n_edits, method)
    run = settings["run"]
    rid = str(run["run_id"])
    config = run["config"] if isinstance(run["config"], dict) else {}
    generated = config.get("generated") if isinstance(config.get("generated"), dict) else None
    tag = f"editbench_{rid[:8]}"
    common = {"run_id": rid, "n_edits": settings["n_edits"],
              "rule": (generated or {}).get("rule", "editbench"),
              "max_tokens": int((generated or {}).get("max_new_tokens", 32))}
    files: dict[str, str] = {LOADER: LOADER_SOURCE, "edits.jsonl": _jsonl(edits)}
    tasks: dict[str, int] = {}
    for suffix, rows in docs.items():
        files[f"{suffix}.jsonl"] = _jsonl(rows)
        kinds = [(suffix, False)]
        if suffix != "portability":  # a question's aliases are not one exact answer
            kinds.append((f"{suffix}_gen", True))
        for name, is_generated in kinds:
            files[f"{name}.yaml"] = _task_yaml(f"{tag}_{name}", tag, f"{suffix}.jsonl",
                                               is_generated, common)
            tasks[f"{tag}_{name}"] = len(rows)
    fmt = (config.get("protocol") or {}).get("prompt_format") if isinstance(
        config.get("protocol"), dict) else None
    files["README.md"] = _readme(rid, tag, tasks, settings, fmt)
    out.mkdir(parents=True, exist_ok=True)
    for name in earlier:
        (out / name).unlink(missing_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / MARKER).write_text(json.dumps({"editbench": "lm-eval export", "run_id": rid,
                                          "files": sorted(files)}, indent=1) + "\n", "utf-8")
    return LmEvalExport(out, rid, tag, tasks, settings["locality_answers"])


def _readme(run_id: str, tag: str, tasks: dict[str, int], settings: dict,
            prompt_format: Any) -> str:
    lines = [f"# editbench run {run_id[:8]} as lm-evaluation-harness tasks", "",
             f"The first {settings['n_edits']} edits of run `{run_id}`.", "",
             "```", f"lm_eval --model hf --model_args pretrained=MODEL_FOLDER "
             f"--include_path THIS_FOLDER --tasks {tag}", "```", "",
             "| task | documents |", "|---|---|",
             *(f"| `{name}` | {n} |" for name, n in tasks.items()), "",
             "`acc` (loglikelihood tasks): every answer token is the model's top-1 after the "
             "prompt and one space (editbench's teacher-forced pass). `exact_match` (`_gen`): the "
             "greedy answer equals the target after editbench's normalisation.",
             "Locality answers: " + ("the unedited model's greedy answers." if
                                     settings["locality_answers"] == "unedited" else
                                     "the dataset's answers (this run stored no unedited "
                                     "answers: it ran without generated scoring)."), ""]
    if prompt_format not in (None, "raw"):
        lines += [f"The run showed prompts as `{prompt_format}`; these documents hold the raw "
                  "prompts (add lm-eval's `--apply_chat_template` for a chat format).", ""]
    return "\n".join(lines)
