"""The published models the editing papers report on, recognised from a model's config.

Methods publish settings per model (MEMIT's layers 3-8 for GPT-J, RLEdit's gate and up projections
of layers 22-30 for Llama-3-8B, ...). editbench recognises those models from the values of their
``config.json`` (architecture, depth, widths), never from a hub name or path, so a local copy or a
renamed checkpoint gets the same settings, and a fine-tuned variant of the same shape too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """A published model as its ``config.json`` describes it, so methods can recognise it and take
    the settings their releases published for it (whatever path or hub name it was loaded from)."""

    name: str
    model_type: str
    n_layers: int
    hidden_size: int
    # where two models share the rest (Llama-2-7B and Llama-3-8B)
    intermediate_size: int | None = None


#: The models the editing papers publish settings for; values from their ``config.json``.
ARCHITECTURES = (
    Architecture("gpt2", "gpt2", 12, 768),
    Architecture("gpt2-xl", "gpt2", 48, 1600),
    Architecture("gpt-j-6b", "gptj", 28, 4096),
    Architecture("llama-2-7b", "llama", 32, 4096, 11008),
    Architecture("llama-3-8b", "llama", 32, 4096, 14336),
    Architecture("mistral-7b", "mistral", 32, 4096, 14336),
    Architecture("gemma-2-9b", "gemma2", 42, 3584, 14336),
    Architecture("qwen2.5-7b", "qwen2", 28, 3584, 18944),
)


def recognise(config) -> str | None:
    """The name of the published architecture ``config`` (a model's config) describes, or None."""
    model_type = getattr(config, "model_type", "")
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    inner = getattr(config, "intermediate_size", None)
    for arch in ARCHITECTURES:
        if ((arch.model_type, arch.n_layers, arch.hidden_size) == (model_type, n_layers, hidden)
                and arch.intermediate_size in (None, inner)):
            return arch.name
    return None


def architecture_of(source: str, trust_remote_code: bool = False) -> str | None:
    """The published architecture of the model at ``source`` (a path or hub name), read from its
    config alone (no weights), or None when it is none of them or its config cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        # the model itself is checked, with a clear message, when it loads
        return None
    return recognise(config)
