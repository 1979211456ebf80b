"""Loading causal LMs and locating their MLP layers.

Methods edit MLP weights; which module holds them depends on the architecture, so it is resolved
here from the model's config (``model_type``), never from a checkpoint name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16}  # DTYPE_CHOICES


@dataclass(frozen=True)
class Family:
    """Module paths of one architecture family, with ``{}`` for the layer index."""

    layers: str  # the ModuleList of blocks
    mlp_in: tuple[str, ...]  # projections into the MLP's hidden space
    mlp_out: str  # projection back to the residual stream (MEMIT's "down"/"c_proj")
    conv1d: bool = False  # GPT-2 stores Conv1D weights as (in, out)


_LLAMA_LIKE = Family("model.layers", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj")
FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer.h", ("mlp.c_fc",), "mlp.c_proj", conv1d=True),
    "gptj": Family("transformer.h", ("mlp.fc_in",), "mlp.fc_out"),
    "gpt_neox": Family("gpt_neox.layers", ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
}


@dataclass(frozen=True)
class ModelLayout:
    """Where a loaded model keeps its MLPs, resolved from ``config.model_type``."""

    model_type: str
    family: Family
    n_layers: int

    @classmethod
    def of(cls, model: nn.Module) -> ModelLayout:
        config = model.config
        model_type = getattr(config, "model_type", "")
        family = FAMILIES.get(model_type)
        if family is None:
            raise ValueError(
                f"editbench cannot locate MLP layers for model_type {model_type!r}; "
                f"supported: {', '.join(sorted(FAMILIES))}"
            )
        n_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
        return cls(model_type, family, int(n_layers))

    def _name(self, layer: int, suffix: str) -> str:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range for a {self.n_layers}-layer model")
        return f"{self.family.layers}.{layer}.{suffix}"

    def mlp_out_name(self, layer: int) -> str:
        return self._name(layer, self.family.mlp_out)

    def mlp_in_names(self, layer: int) -> list[str]:
        return [self._name(layer, suffix) for suffix in self.family.mlp_in]

    def block_name(self, layer: int) -> str:
        return f"{self.family.layers}.{layer}"

    def layer_of(self, module: str) -> int:
        """The block index of a module inside the stack (``model.layers.5.mlp.down_proj`` -> 5)."""
        prefix = f"{self.family.layers}."
        if not module.startswith(prefix):
            raise ValueError(f"{module} is not inside {self.family.layers}")
        return int(module[len(prefix):].split(".", 1)[0])

    def resolve_layer(self, layer: int) -> int:
        """Python-style negative indices count from the top of the stack."""
        return layer + self.n_layers if layer < 0 else layer


def model_fingerprint(model: nn.Module) -> str:
    """A digest of the architecture, the dtype and a strided sample of every weight: stable across
    paths and machines, different for another or a fine-tuned checkpoint. What is computed once per
    model and cached (key statistics, trained editors) is filed under it."""
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in sorted(model.named_parameters()):
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu()
        digest.update(name.encode() + str(param.dtype).encode() + sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def weight_as_out_in(module: nn.Module, conv1d: bool) -> torch.Tensor:
    """The module's weight viewed as (out_features, in_features), whatever its storage."""
    return module.weight.T if conv1d else module.weight


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: no CUDA device is available; use --device cpu")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` edits in float32 on CPU (bf16 matmuls are slow there) and bfloat16 on GPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one of: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


class ModelLoadError(ValueError):
    """``--model`` names nothing loadable; the message says what was tried and what would work."""


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_source(source: str) -> None:
    """Refuse, before transformers is asked, what cannot be a model: a missing path that is written
    as one, or a folder that holds no saved model (whose first complaint would be the
    tokenizer's)."""
    path = Path(source).expanduser()
    if not path.exists():
        if source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
            raise ModelLoadError(f"--model {source!r}: no such local folder")
        return  # a hub name such as gpt2 or owner/name
    if not path.is_dir():
        raise ModelLoadError(f"--model {source!r} is a file; pass the folder that save_pretrained "
                             "wrote")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"--model {source!r}: the folder holds no config.json, so it is not "
                             "a saved Hugging Face model (write one with model.save_pretrained "
                             "and tokenizer.save_pretrained)")


def _load_error(source: str, what: str, exc: BaseException) -> ModelLoadError:
    if Path(source).expanduser().exists():
        return ModelLoadError(f"--model {source!r}: cannot load its {what} ({_first_line(exc)})")
    return ModelLoadError(f"--model {source!r}: no such local folder (in {Path.cwd()}), and the "
                          f"Hugging Face hub has no {what} under that name or cannot be reached "
                          f"({_first_line(exc)}); pass an "
                          "existing folder or a hub name such as gpt2")


def load_model(
    name_or_path: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> tuple[nn.Module, object]:
    """Load a Hugging Face causal LM and its tokenizer by hub name or local path.

    Weights load through safetensors where the checkpoint has them; remote code runs only when
    the user asked for it. What cannot be loaded is a :class:`ModelLoadError` naming ``--model``.
    ``device_map`` (``auto``) lets accelerate shard a model larger than one GPU over all of them;
    methods then read and write each tensor on the device it lives on.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    source = str(name_or_path)
    tokenizer = load_tokenizer(source, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=None,
            **({"device_map": device_map} if device_map else {}),
        )
    except (OSError, ValueError) as exc:
        raise _load_error(source, "model", exc) from exc
    except Exception as exc:  # a damaged or inconsistent checkpoint; memory stays an OOM error
        if isinstance(exc, MemoryError) or "out of memory" in str(exc):
            raise
        if "mismatched_sizes" in str(exc) or "size mismatch" in str(exc):
            raise ModelLoadError(f"--model {source!r}: its config.json disagrees with its weights "
                                 "(tensor shapes differ); save the model again with "
                                 "save_pretrained, or fix config.json") from exc
        if type(exc).__name__ == "SafetensorError":
            raise ModelLoadError(f"--model {source!r}: a weights file is damaged or truncated "
                                 f"({_first_line(exc)}); copy or download it again") from exc
        raise
    if not device_map:
        model.to(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, tokenizer


def load_tokenizer(source: str, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (the EOS token where the model defines none)."""
    from transformers import AutoTokenizer

    _check_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(source, "tokenizer", exc) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
