"""A run's settings, declared once: :class:`RunSpec`.

Each field carries its default, its help text, how the command line spells it and what it
accepts (:class:`Option`). The ``run`` command's options (``harness/cli/options.py``), the keys of
a run file (``harness/plan/runfile.py``) and the keyword arguments of ``editbench.run`` are all
derived from these fields, as transformers' ``HfArgumentParser`` derives its options from
dataclasses, so that a default or a check cannot drift between them. A value arrives as text (the
command line) or in its natural type (YAML, Python); :meth:`RunSpec.__post_init__` turns either
into the field's type and refuses a bad one in one line that names the option.

This module imports neither torch nor click: ``editbench --help`` builds its options from it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.configs import DTYPE_CHOICES, PROBE_BACKENDS, parse_overrides
from ...core.outputs import check_work_folder
from ...core.prompts import PROMPT_FORMATS
from ...core.protocol import GENERATION_RULES, LOCALITY_REFERENCES, PROTOCOLS

#: the value kinds a setting may have; each has one way to read text and natural values
KINDS = ("text", "int", "float", "flag", "switch", "on-off", "names", "counts", "seeds",
         "params", "editors", "path")


@dataclass(frozen=True)
class Option:
    """How a setting is written on the command line and in a run file, and what it accepts."""

    help: str
    kind: str = "text"
    #: the command line's spelling when it is not ``--`` + the field name with dashes
    flag: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    #: the least value an ``int`` or ``counts`` setting takes
    at_least: int | None = None
    #: another name a run file may use for it (``seed`` for ``seeds`` and so on)
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown setting kind {self.kind!r}")


def setting(default: Any, help: str, kind: str = "text", **option: Any) -> Any:
    """A :class:`RunSpec` field with its :class:`Option`."""
    meta = {"option": Option(help, kind, **option)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def option_of(item: dataclasses.Field) -> Option:
    return item.metadata["option"]


def flag_of(item: dataclasses.Field) -> str:
    """``--batch-size``: how the command line and every error message name the setting."""
    return option_of(item).flag or f"--{item.name.replace('_', '-')}"


def to_text(value: Any) -> str:
    """A value as the command line spells it (``--param`` values are kept as text)."""
    if isinstance(value, (list, tuple)):
        return ",".join(to_text(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _items(value: Any, name: str, example: str) -> list[Any]:
    """A comma-separated text or a list (or one number), as a list of its parts."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if not all(parts):  # "" or ", ," never silently means the default
            raise ValueError(f"{name} {value!r}: an empty item; expected comma-separated items "
                             f"such as {example}")
        return parts
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{name}: expected a list or comma-separated text such as {example}, "
                     f"got {value!r}")


#: the largest integer the store (SQLite) and torch's generators hold
LARGEST = 2**63 - 1


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    if abs(value) > LARGEST:
        raise ValueError(f"{name}: {value} is too large (at most {LARGEST})")
    return value


def _boolean(value: Any, name: str, true: str = "true", false: str = "false") -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in (true, "true", "yes", "1"):
        return True
    if text in (false, "false", "no", "0"):
        return False
    raise ValueError(f"{name}: expected {true} or {false}, got {value!r}")


def _params(value: Any, name: str) -> dict[str, dict[str, str]]:
    """``{ft-m: {lr: 1e-3}}`` or ``["ft-m.lr=1e-3"]``: settings of methods and tasks, as text
    (each owner's config dataclass parses its own fields, ``core/configs.py``)."""
    if isinstance(value, Mapping):
        parsed: dict[str, dict[str, str]] = {}
        for owner, settings in value.items():
            if not isinstance(settings, Mapping):
                raise ValueError(f"{name}: params.{owner} must map settings to values, "
                                 "e.g. {lr: 0.001}")
            parsed[str(owner)] = {str(k): to_text(v) for k, v in settings.items()}
        return parsed
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        return parse_overrides([str(item) for item in value])
    raise ValueError(f"{name}: expected a mapping such as {{ft-m: {{lr: 0.001}}}} "
                     "or NAME.FIELD=VALUE items")


def _editors(value: Any, name: str) -> dict[str, Path]:
    """``{rledit: DIR}`` or ``["rledit=DIR"]``."""
    if isinstance(value, Mapping):
        return {str(method): Path(folder) for method, folder in value.items()}
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: expected a mapping of a method to a folder, "
                         "e.g. {rledit: trained/rledit}")
    parsed = {}
    for item in value:
        method, sep, folder = str(item).partition("=")
        if not sep or not method or not folder:
            raise ValueError(f"{name} {item!r}: expected METHOD=DIR")
        parsed[method] = Path(folder)
    return parsed


def coerce(item: dataclasses.Field, value: Any) -> Any:
    """``value`` (text or natural) as the field's type, checked; the error names the option."""
    option, name = option_of(item), flag_of(item)
    if value is None:
        if item.default is None:
            return None
        raise ValueError(f"{name} needs a value")
    kind = option.kind
    if kind == "text":
        text = to_text(value)
        if not text.strip():  # an empty --model or --task never silently means the default
            raise ValueError(f"{name} needs a value, got {value!r}")
        if option.choices is not None and text not in option.choices:
            raise ValueError(f"{name} {text!r} is not one of: {', '.join(option.choices)}")
        return text
    if kind == "path":
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ValueError(f"{name} needs a path, got {value!r}")
        return Path(value)
    if kind == "int":
        number = _integer(value, name)
        if option.at_least is not None and number < option.at_least:
            raise ValueError(f"{name} must be an integer of at least {option.at_least}, "
                             f"got {value!r}")
        return number
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if kind in ("flag", "switch"):
        if not isinstance(value, bool) and str(value).strip().lower() not in ("true", "false"):
            raise ValueError(f"{name.removeprefix('--')} is a flag: true or false, got {value!r}")
        return _boolean(value, name)
    if kind == "on-off":
        return _boolean(value, name, "on", "off")
    if kind == "names":
        names = tuple(str(part).strip() for part in _items(value, name, "a,b"))
        if option.choices is not None:
            unknown = [part for part in names if part not in option.choices]
            if unknown:
                raise ValueError(f"{name}: unknown {unknown[0]!r}; choose among "
                                 f"{', '.join(option.choices)}")
        return names
    if kind in ("counts", "seeds"):
        example = "0,1,2" if kind == "seeds" else "10,100,1000"
        try:
            numbers = tuple(_integer(part, name) for part in _items(value, name, example))
        except ValueError as exc:
            if "too large" in str(exc):
                raise
            raise ValueError(f"{name} {to_text(value)!r}: expected comma-separated integers, "
                             f"e.g. {example}") from None
        if kind == "seeds" and any(n < 0 for n in numbers):
            raise ValueError(f"{name} {to_text(value)!r}: a seed is at least 0")
        if kind == "seeds" and not numbers:
            raise ValueError(f"{name}: name at least one seed")
        if option.at_least is not None and any(n < option.at_least for n in numbers):
            raise ValueError(f"{name} {to_text(value)!r}: each must be at least {option.at_least}")
        return numbers
    if kind == "params":
        return _params(value, name)
    if kind == "editors":
        return _editors(value, name)
    raise AssertionError(kind)


@dataclass(frozen=True)
class RunSpec:
    """What the user asked ``editbench run`` for. Every entry point (the command line, a run file,
    ``editbench.run``, a sweep's cells, ``editbench train``) makes one, so each refuses the same
    bad value with the same message before anything is loaded; :func:`~.resolve.resolve` turns
    it into a :class:`~.resolve.RunPlan` without loading weights."""

    methods: tuple[str, ...] = setting(
        (), "Comma-separated methods, NAME or NAME@PRESET (see `editbench list --presets`); "
        "default: every registered method.", "names", metavar="A,B")
    task: str | None = setting(
        None, "A registered task (default: the built-in pocket world), or a path to a JSONL file "
        "of your own edits.")
    data: str | None = setting(
        None, "The task's data: a local file, an http(s) URL or a Hugging Face datasets id.")
    split: str = setting("eval", "Which split of the task to edit with.",
                         choices=("eval", "train"))
    limit: int | None = setting(None, "Use only the first N records of the split.", "int",
                                at_least=1)
    edits: int | None = setting(None, "Number of edits; default: the task's default (200 for "
                                "pocket).", "int", at_least=1)
    protocol: str = setting(
        "editbench", "The protocol: how edits are turned and scored, a named setup from a paper "
        "(editbench list --protocols). It sets the options below that are left out; any that is "
        "given is stored as a change to it.", choices=tuple(PROTOCOLS))
    batch_size: int | None = setting(
        None, "Edits applied per turn; default: the protocol's (10 under editbench).", "int",
        at_least=1)
    checkpoints: tuple[int, ...] = setting(
        (), "Edit counts at which to evaluate; default: the protocol's (a 1-2-5 ladder up to "
        "--edits, or the end alone).", "counts", metavar="N,N,...", at_least=1)
    eval_sample: int | None = setting(
        None, "Evaluate a seeded sample of N edits (stratified by position) instead of all edits "
        "so far.", "int", at_least=2)
    model: str | None = setting(
        None, "Hugging Face hub name or local path; default: the task's own model.")
    dtype: str = setting("auto", "Weights dtype; auto = float32 on CPU, bfloat16 on GPU.",
                         choices=DTYPE_CHOICES)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    seed: tuple[int, ...] = setting(
        (0,), "Seeds the edit order and every method; several seeds make a sweep (one run per "
        "seed).", "seeds", metavar="N[,N...]", alias="seeds")
    out: Path = setting(Path("editbench-results"), "Results folder (SQLite store and snapshots); "
                        "rerun the same command to resume.", "path")
    params: Mapping[str, Mapping[str, str]] = setting(
        {}, "Set a method's or task's setting, e.g. --param ft-m.lr=1e-3 (repeatable).", "params",
        flag="--param", metavar="NAME.FIELD=VALUE", alias="param")
    editors: Mapping[str, Path] = setting(
        {}, "Edit with a trained editor (e.g. rledit=DIR from `editbench train`) instead of "
        "training one; repeatable.", "editors", flag="--editor", metavar="METHOD=DIR",
        alias="editor")
    lenient: bool = setting(False, "Skip malformed data records (counted, with reasons, in the "
                            "log) instead of stopping.", "flag")
    capability: tuple[str, ...] = setting(
        (), "General-capability question sets asked after editing: sst2, mrpc, cola, rte, nli, "
        "mmlu.", "names", metavar="NAME,NAME")
    capability_data: str | None = setting(
        None, "Folder with NAME.json(l) files of those sets; default: the Hugging Face datasets.",
        metavar="DIR")
    capability_limit: int = setting(100, "Questions per set.", "int", at_least=1)
    capability_at: tuple[int, ...] = setting(
        (), "Checkpoints at which to ask them; default: the last one (and always the unedited "
        "model).", "counts", metavar="N,N", at_least=1)
    probe_backend: str = setting(
        "auto", "Who scores prompts: Hugging Face transformers, or vLLM (auto: vLLM when "
        "installed and on a GPU).", choices=PROBE_BACKENDS)
    vllm_memory: float = setting(
        0.4, "Share of GPU memory the vLLM engine takes (gpu_memory_utilization); the edited "
        "model keeps the rest.", "float")
    executor: str = setting(
        "local", "Run the (method, seed) cells here one by one, or as Ray tasks "
        "(pip install 'editbench[ray]').", choices=("local", "ray"))
    ray_address: str | None = setting(None, "Ray cluster to join (default: start a local one).")
    jobs: int | None = setting(
        None, "With the local executor, run this many (method, seed) cells at once, each in its "
        "own process on one CPU thread's share of the cores. Default on the command line: one "
        "per CPU core when the run has several cells and its model is small enough for one "
        "thread (the pocket world), else one at a time; from Python, one at a time. A model "
        "that small scores the same either way.", "int", at_least=1)
    trust_remote_code: bool = setting(False, "Allow the model's own Python code from the hub to "
                                      "run.", "flag")
    restart: tuple[str, ...] = setting(
        (), "Drop these methods' stored results and snapshots in --out (this run's settings) and "
        "run them again, e.g. after a damaged snapshot.", "names", metavar="A,B")
    gen_eval: bool | None = setting(
        None, "Also score greedily generated answers (exact match, prefix, agreement with the "
        "unedited model) beside the teacher-forced scores; default: the protocol's (on under "
        "editbench).", "on-off")
    prompt_format: str | None = setting(
        None, "How prompts are shown to the model, when editing and scoring alike: raw; chat "
        "(the tokenizer's chat template, the answer starting the assistant's turn); qa (QAEdit's "
        "'Please answer the question: Q: ... A:'); fewshot (three solved examples from the "
        "task's train split first). See docs/prompt-formats.md. Default: the protocol's (raw "
        "under every card).", choices=PROMPT_FORMATS)
    gen_rule: str | None = setting(
        None, "How a generated answer is decoded and matched: editbench (stop at a newline, the "
        "target's length plus three tokens, outer punctuation ignored) or wild (QAEdit and "
        "LocFT-BF: up to 32 tokens, stop at '.', all punctuation ignored); default: the "
        "protocol's.", choices=tuple(r for r in GENERATION_RULES if r != "off"))
    gen_max_tokens: int | None = setting(
        None, "At most this many new tokens per generated answer; default: the rule's (16 for "
        "editbench, 32 for wild).", "int", at_least=1)
    locality: str | None = setting(
        None, "The headline locality: agreement with the unedited model (agree) or accuracy "
        "against the dataset's answers (answers); both are stored. Default: the protocol's.",
        choices=LOCALITY_REFERENCES)
    ignore_plan: bool = setting(
        False, "Run even when the plan (editbench run --dry-run) says a method will not fit the "
        "device's memory.", "flag")
    device_map: str | None = setting(
        None, "auto: shard the model over every visible GPU (accelerate), for models larger than "
        "one GPU.", choices=("auto",))
    master_copy: bool = setting(
        True, "Keep float32 master copies of edited bf16/fp16 weights so that small updates are "
        "not rounded away over thousands of batches (off only to measure the difference).",
        "switch")
    save_model: int | None = setting(
        None, "Save each method's edited model at checkpoint N (save_pretrained, safetensors, "
        "with the tokenizer) under OUT/models/, for lm-evaluation-harness or serving.", "int",
        metavar="N", at_least=1)
    cache_dir: Path | None = setting(
        None, "Cache folder for built models, trained editors and key statistics (default: "
        "EDITBENCH_CACHE, else the user's cache folder).", "path", metavar="DIR")
    allow_code_change: bool = setting(
        False, "Resume a run in --out that other editbench code made (another version or source "
        "hash) instead of stopping; the run records the change and the board marks its rows.",
        "flag")

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: every value in the field's own type
        for item in dataclasses.fields(self):
            set_(self, item.name, coerce(item, getattr(self, item.name)))
        task, data = self.task, self.data
        if task is not None and (task.endswith(".jsonl") or (Path(task).suffix
                                                             and Path(task).exists())):
            if data is not None:  # --task my_edits.jsonl is short for --task jsonl --data ...
                raise ValueError(f"--task {task!r} is a file; pass either it or --data, not both")
            set_(self, "task", "jsonl")
            set_(self, "data", task)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; results go to a folder: choose another "
                             "--out")
        check_work_folder(self.out, "--out")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"--methods lists a method twice: {','.join(self.methods)}")
        if not 0 < self.vllm_memory < 1:
            raise ValueError(f"--vllm-memory must be a share between 0 and 1, got "
                             f"{self.vllm_memory}")
        if self.capability:
            from ..evaluation.capability import CAPABILITY_SETS  # loads torch: not at --help

            unknown = [name for name in self.capability if name not in CAPABILITY_SETS]
            if unknown:
                raise ValueError(f"--capability: unknown set {unknown[0]!r}; known: "
                                 f"{', '.join(CAPABILITY_SETS)}")
        if self.capability_at and not self.capability:
            raise ValueError("--capability-at needs --capability (which sets to ask)")

    # -- the other spellings of the same settings ---------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "the run settings") -> RunSpec:
        """A spec from a run file's or a caller's mapping; an unknown key is one line naming
        ``where`` and the closest known key."""
        return cls(**keys_to_fields(data, where))

    def to_mapping(self) -> dict[str, Any]:
        """The settings as a run file writes them: natural types, in the order of ``--help``;
        :meth:`from_mapping` reads it back to an equal spec."""
        data: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            kind = option_of(item).kind
            if kind == "params":
                value = {owner: dict(settings) for owner, settings in value.items()}
            elif kind == "editors":
                value = {method: str(folder) for method, folder in value.items()}
            elif kind == "seeds":
                value = value[0] if len(value) == 1 else list(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Path):
                value = str(value)
            data[item.name] = value
        return data

    def with_seed(self, seed: int) -> RunSpec:
        """This spec for one seed of a sweep."""
        return dataclasses.replace(self, seed=(seed,))


def settings_fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(RunSpec)


def keys_to_fields(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A run file's or a caller's keys (``batch_size`` or ``batch-size``, or an alias such as
    ``seed``/``seeds``, ``param``/``params``) as field names; an unknown key is an error."""
    known = {item.name: item for item in settings_fields()}
    aliases = {option_of(item).alias: item.name for item in known.values()
               if option_of(item).alias}
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = aliases.get(key, key)
        if key not in known:
            names = sorted(known)
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{where + ': ' if where else ''}unknown option {raw_key!r}; "
                             f"{hint}options: {', '.join(names)}")
        try:
            out[key] = coerce(known[key], value)
        except ValueError as exc:  # the flags' own layer needs no "where": the flag names it
            raise ValueError(f"{where}: {exc}" if where else str(exc)) from None
    return out


#: settings whose items merge, field by field, when one layer lies over another
MERGED = ("params", "editors")


def layered(layers: Iterable[tuple[Mapping[str, Any], str]]) -> dict[str, Any]:
    """Field values from several layers (a run file, then the flags or keyword arguments over
    it), each ``(mapping, where)``: a later layer's value wins, except that ``params`` and
    ``editors`` merge, a later layer's items over an earlier one's."""
    merged: dict[str, Any] = {}
    for data, where in layers:
        for key, value in keys_to_fields(data, where).items():
            if key in MERGED and key in merged:
                if key == "params":
                    owners = {owner: dict(items) for owner, items in merged[key].items()}
                    for owner, items in value.items():
                        owners.setdefault(owner, {}).update(items)
                    value = owners
                else:
                    value = {**merged[key], **value}
            merged[key] = value
    return merged
