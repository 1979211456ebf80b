"""Small models made here, from a config: no download, seconds to build.

The pocket world trains its model with a tokenizer made by :func:`train_tokenizer`; ``editbench
bench`` and the tests use random-weight micro models of a real architecture, which exercise every
code path a 7B model does at a thousandth of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def train_tokenizer(sentences: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``sentences``, with pad (0), BOS (1) and EOS (2) tokens
    and BOS prepended to every text, wrapped as a ``transformers`` fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


#: The chat template of micro models that stand in for instruction-tuned ones
#: (``--prompt-format chat``): BOS, each message between its role's token and ``<|end|>``, and
#: the assistant's token where its answer starts.
MICRO_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>"
    "{{ message['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>"
    "{% endif %}"
)
MICRO_CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


def add_chat_template(tokenizer):
    """``tokenizer`` with the micro chat template and its role tokens (before a model is sized by
    ``len(tokenizer)``)."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(MICRO_CHAT_TOKENS)})
    tokenizer.chat_template = MICRO_CHAT_TEMPLATE
    return tokenizer


@dataclass(frozen=True)
class MicroModel:
    """The size of a random-weight Llama-architecture model."""

    hidden: int = 64
    layers: int = 4
    vocab: int = 400
    max_positions: int = 128
    chat_template: bool = False  # a tokenizer with MICRO_CHAT_TEMPLATE


def build_micro_model(folder: Path, texts: Sequence[str], spec: MicroModel = MicroModel(),
                      seed: int = 0) -> Path:
    """Save a random-weight Llama-architecture model, with a tokenizer trained on ``texts``, in
    ``folder`` (kept if it is already there)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    tokenizer = train_tokenizer(texts, spec.vocab)
    if spec.chat_template:
        add_chat_template(tokenizer)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden,
                         intermediate_size=4 * spec.hidden, num_hidden_layers=spec.layers,
                         num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=spec.max_positions, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
