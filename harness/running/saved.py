"""``--save-model N``: the edited model at checkpoint N, as a Hugging Face model folder.

The runner's snapshots hold only the edited tensors and the method's state, for resuming; this
folder is a whole model (``save_pretrained``, safetensors, with the tokenizer), so that
lm-evaluation-harness, vLLM or ``AutoModelForCausalLM.from_pretrained`` can load it as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


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


def save_edited_model(model, tokenizer, folder: Path) -> Path:
    """Write ``model`` and ``tokenizer`` into ``folder`` (a half-written folder is replaced
    whole)."""
    import shutil

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log.info("edited model saved: %s (load it with AutoModelForCausalLM.from_pretrained)", folder)
    return folder
