"""``--save-model N``: the edited model at checkpoint N, as a Hugging Face model folder.

The runner's snapshots hold only the edited tensors and the method's state, for resuming; this
folder is a whole model (``save_pretrained``, safetensors, with the tokenizer), so that
lm-evaluation-harness, vLLM or ``AutoModelForCausalLM.from_pretrained`` can load it as it is. It
carries a model card (``README.md``: what was edited, how, by which run and code, and the scores
the run gave it) and a tokenizer that every transformers the project supports loads: transformers
5 writes its generic fast tokenizer as ``TokenizersBackend``, a class transformers 4 does not have,
so that name is written as ``PreTrainedTokenizerFast``, which both read from ``tokenizer.json``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: what transformers 5 names a tokenizer that is only its ``tokenizer.json``, and the name
#: transformers 4 (and 5) load such a tokenizer by
GENERIC_TOKENIZER = {"TokenizersBackend": "PreTrainedTokenizerFast"}
#: keys transformers 5 writes into ``tokenizer_config.json`` that describe where it was loaded
#: from, not the tokenizer (an older transformers would pass them on as settings)
LOADING_KEYS = ("is_local", "local_files_only")


@dataclass(frozen=True)
class ModelCard:
    """What the saved folder's ``README.md`` says: the model card's YAML front matter (read by the
    Hub and by ``huggingface_hub.ModelCard``) and a short text."""

    base_model: str
    method: str  # the run's label: NAME or NAME@PRESET
    preset: str | None
    n_edits: int
    run_id: str
    task: str
    protocol: str
    code: Mapping[str, str]  # core/identity.code_identity(): editbench version and code hash
    seed: int = 0
    dataset_hash: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)  # metric -> mean at the checkpoint

    def front_matter(self) -> dict[str, Any]:
        data: dict[str, Any] = {"library_name": "transformers"}
        if _hub_id(self.base_model):
            data["base_model"] = self.base_model
        data["tags"] = ["editbench", "knowledge-editing", self.method.partition("@")[0]]
        data["editbench"] = {
            "base_model": self.base_model, "method": self.method, "preset": self.preset,
            "edits": self.n_edits, "run_id": self.run_id, "task": self.task,
            "protocol": self.protocol, "seed": self.seed, "dataset_hash": self.dataset_hash,
            "version": self.code.get("editbench"), "code": self.code.get("code"),
            "scores": {k: round(float(v), 6) for k, v in sorted(self.scores.items())},
        }
        return data

    def text(self) -> str:
        """The whole ``README.md``; every stored string is escaped for YAML (safe_dump) or for
        Markdown (:func:`_markdown`)."""
        front = yaml.safe_dump(self.front_matter(), sort_keys=False, allow_unicode=True)
        lines = [
            "---", front.rstrip("\n"), "---", "",
            f"# {_markdown(self.method)} edit of {_markdown(self.base_model)}", "",
            f"{_markdown(self.base_model)} after {self.n_edits} edits by "
            f"{_markdown(self.method)}, in editbench run {_markdown(self.run_id)} (task "
            f"{_markdown(self.task)}, protocol {_markdown(self.protocol)}, seed {self.seed}), "
            f"made by editbench {_markdown(str(self.code.get('editbench')))} (code "
            f"{_markdown(str(self.code.get('code')))}).", "",
            "Load it with `AutoModelForCausalLM.from_pretrained(FOLDER)`. To score it with "
            "lm-evaluation-harness on the run's edits: `editbench export --lm-eval RESULTS "
            f"--run {_markdown(self.run_id[:8])} --edits {self.n_edits}`, then `lm_eval --model "
            "hf --model_args pretrained=FOLDER --include_path editbench-lm-eval --tasks "
            f"editbench_{_markdown(self.run_id[:8])}`.", ""]
        if self.scores:
            lines += ["| metric | mean at this checkpoint |", "|---|---|",
                      *(f"| {_markdown(k)} | {float(v):.4f} |"
                        for k, v in sorted(self.scores.items())), ""]
        return "\n".join(lines)


def _hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub model id (``org/name``) rather than a local folder."""
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not Path(name).exists()
            and not name.startswith("."))


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!|<>&~])")


def _markdown(text: str) -> str:
    """``text`` shown as itself in Markdown: its special characters (HTML's too) escaped, line
    breaks as spaces."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def saved_model_folder(out: Path, run_id: str, label: str, n_edits: int) -> Path:
    """``OUT/models/<run>/<method>/edits-N``."""
    return Path(out) / "models" / run_id / label.replace("/", "_") / f"edits-{n_edits}"


def warn_if_passed(n_edits: int | None, resumed_at: int, folder: Path) -> None:
    """A run resumed after checkpoint N does not come back to it: say so if its model was never
    saved."""
    if n_edits is not None and resumed_at >= n_edits and not folder.exists():
        log.warning("--save-model %d: this run resumes after %d edits, so the model at %d edits is "
                    "not saved; rerun with --restart METHOD to save it", n_edits, resumed_at,
                    n_edits)


def portable_tokenizer_config(folder: Path) -> None:
    """Rewrite ``folder/tokenizer_config.json`` so that transformers 4 loads it too: the generic
    fast tokenizer under the name both know, and without transformers 5's notes on where it was
    loaded from. A folder without ``tokenizer.json`` (a slow tokenizer) is left as it is."""
    path = folder / "tokenizer_config.json"
    if not path.is_file() or not (folder / "tokenizer.json").is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    named = config.get("tokenizer_class")
    if named not in GENERIC_TOKENIZER and not any(k in config for k in LOADING_KEYS):
        return
    if named in GENERIC_TOKENIZER:
        config["tokenizer_class"] = GENERIC_TOKENIZER[named]
    for key in LOADING_KEYS:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_edited_model(model, tokenizer, folder: Path, card: ModelCard | None = None) -> Path:
    """Write ``model``, ``tokenizer`` (loadable by transformers 4 and 5) and the model ``card``
    into ``folder`` (a half-written folder is replaced whole)."""
    import shutil

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    portable_tokenizer_config(partial)
    if card is not None:
        (partial / "README.md").write_text(card.text(), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log.info("edited model saved: %s (load it with AutoModelForCausalLM.from_pretrained)", folder)
    return folder
