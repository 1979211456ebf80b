"""Settings shared by every locate-then-edit method (MEMIT, AlphaEdit).

The field names follow the published hyperparameter files (``v_num_grad_steps`` is ``v_steps``
here) so a reader can compare them line by line. Defaults suit the pocket-world model (4 layers,
hidden 128); the published settings for 6-8B models are presets of each method.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.method import MethodConfig


@dataclass(frozen=True)
class LocateConfig(MethodConfig):
    #: MLP layers whose output projection is edited; the last one is where the target value
    #: vector is optimised (MEMIT's "critical path" ends there). Negative indices count from the
    #: top. The pocket model recalls facts through its subject's last token only at layer 0's
    #: output.
    layers: tuple[int, ...] = (0,)
    # Target value optimisation (MEMIT Alg. 1, the z_i step): Adam on a delta added to the last
    # edited layer's output at the subject's last token.
    v_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5  # times ||delta|| / ||h||^2
    kl_factor: float = 0.0625  # KL on "{subject} is a" keeps the subject's other facts
    clamp_norm_factor: float = 0.75  # ||delta|| <= factor * ||h||
    v_stop_loss: float = 5e-2  # a record's optimisation stops once its loss is this small
    v_chunk: int = 16  # records optimised together (memory bound only; results do not depend on it)
    #: Generated prefixes ("The ...", "Because ...") under which the edit must also hold, as the
    #: published code does with 5 prefixes of 10 tokens (the presets); 0 edits the bare prompt only,
    #: the pocket default: its model makes no sense of multi-sentence text, and they cost 4x the
    #: time.
    context_prefixes: int = 0
    context_prefix_tokens: int = 10
    # Key second moments E[k k^T] at each edited layer, over a corpus (MEMIT's C0, up to its
    # weight).
    #: "auto": the task's own text when it has one, else ``stats_hub``; "task"; "hub"; or a path
    #: to a local .txt (one sample per line) or .jsonl (a "text" field per line).
    stats_corpus: str = "auto"
    #: Hugging Face datasets id[:config] used for "hub" (the published runs used Wikipedia).
    stats_hub: str = "Salesforce/wikitext:wikitext-103-raw-v1"
    mom2_n_samples: int = 100_000
    stats_batch_tokens: int = 8192  # padded tokens per forward pass while collecting keys
    #: A folder holding the MEMIT/ROME or AlphaEdit release's layer statistics (its ``data/stats``:
    #: ``<model>/<dataset>_stats/<module>_float32_mom2_100000.npz``), imported instead of computed;
    #: blank computes them (:mod:`.published`).
    stats_import: str = ""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers lists a layer twice: {self.layers}")
        for name in ("v_lr", "clamp_norm_factor", "v_stop_loss"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("v_weight_decay", "kl_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("v_steps", "v_chunk", "mom2_n_samples", "stats_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.context_prefixes < 0 or self.context_prefix_tokens < 1:
            raise ValueError("context_prefixes must be >= 0 and context_prefix_tokens >= 1, got "
                             f"{self.context_prefixes} and {self.context_prefix_tokens}")


#: The published settings shared by MEMIT and AlphaEdit (the AlphaEdit release's hparams files;
#: MEMIT's own for GPT-2 XL and GPT-J are the same). Lists are strings because presets are read
#: like ``--param`` values. Each method adds its own fields (mom2 weight, null-space threshold).
PUBLISHED: dict[str, dict[str, str | int | float]] = {
    "gpt2-xl": {"layers": "13,14,15,16,17", "v_steps": 20, "v_lr": 0.5},
    "gpt-j-6b": {"layers": "3,4,5,6,7,8", "v_steps": 25, "v_lr": 0.5},
    "llama-3-8b": {"layers": "4,5,6,7,8", "v_steps": 25, "v_lr": 0.1},
}
#: the names these presets had before they were named after ``core/architectures.py``
ALIASES = {"gpt-j": "gpt-j-6b", "llama3-8b": "llama-3-8b"}
COMMON_PUBLISHED = {"v_weight_decay": 0.5, "kl_factor": 0.0625, "clamp_norm_factor": 0.75,
                    "context_prefixes": 5, "context_prefix_tokens": 10, "stats_corpus": "hub",
                    "stats_hub": "wikimedia/wikipedia:20231101.en", "mom2_n_samples": 100_000,
                    # memory only (results do not depend on it): the releases optimise one record's
                    # values at a time; 4 at once keeps a 7-9B model's value graph within 80 GB
                    # (``editbench plan``)
                    "v_chunk": 4}


def published_presets(
    **per_model: dict[str, str | int | float]
) -> dict[str, dict[str, str | int | float]]:
    """The presets of one method: the shared published settings plus that method's own fields, named
    after the model (``core/architectures.py``), so the runner picks them for that model."""
    presets = {
        model: {**COMMON_PUBLISHED, **shared, **per_model[model]}
        for model, shared in PUBLISHED.items()
    }
    return {**presets, **{alias: presets[model] for alias, model in ALIASES.items()}}
