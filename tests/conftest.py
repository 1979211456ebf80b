"""Shared fixtures: micro models built from a config, a tiny pocket world, the shared data
folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("EDITBENCH_NO_PROGRESS", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one worker per core, each on one
    # thread, so two workers never fight over the cores (the README's test command; the numbers
    # tests check do not depend on the thread count: tests/test_numerics.py, test_threads.py)
    torch.set_num_threads(1)
    # and the runs the tests start, in this process or another, run their cells one after another
    # (a thread count the user set means --jobs 1 by default: harness/running/threads.py);
    # tests/test_executors.py runs cells side by side with --jobs 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

try:  # the fuzzing suite's profiles (tests/test_fuzz.py): a few examples per test by default,
    # the same ones every run; `pytest --hypothesis-profile long` for a long random search
    from hypothesis import HealthCheck, settings

    _QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
              HealthCheck.filter_too_much, HealthCheck.data_too_large]
    settings.register_profile("default", max_examples=8, deadline=None, derandomize=True,
                              suppress_health_check=_QUIET, print_blob=True)
    # derandomize=False said outright: a profile inherits the profile named "default" (the one
    # above, derandomized), so without it every long run tried the same examples
    settings.register_profile("long", max_examples=400, deadline=None, derandomize=False,
                              suppress_health_check=_QUIET, print_blob=True)
    settings.load_profile("default")
except ImportError:  # hypothesis is in the test extra; without it test_fuzz.py is skipped
    pass
TINY_WORLD = {"n_entities": 20}


def tiny_world():
    from editbench.tasks.pocket import PocketConfig, PocketWorld

    return PocketWorld(PocketConfig(**TINY_WORLD))


def micro_config(family: str, vocab_size: int):
    """A few-layer model of the given family, small enough to run in milliseconds."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        return tf.GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=512, **common)
    if family == "gptj":
        return tf.GPTJConfig(
            n_layer=3, n_embd=32, n_head=2, rotary_dim=8, n_positions=512, **common
        )
    llama_like = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, **common
    )
    if family == "llama":
        return tf.LlamaConfig(**llama_like)
    if family == "mistral":
        return tf.MistralConfig(**llama_like)
    if family == "qwen2":
        return tf.Qwen2Config(**llama_like)
    if family == "gemma":
        return tf.GemmaConfig(head_dim=16, **llama_like)
    raise ValueError(family)


@pytest.fixture(scope="session")
def world_tokenizer():
    from editbench.core.micro import train_tokenizer

    return train_tokenizer(tiny_world().training_sentences(), vocab_size=300)


def save_micro_model(family: str, tokenizer, folder: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(micro_config(family, len(tokenizer)))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_micro_gemma2(tokenizer, folder: Path, **settings) -> Path:
    """A micro Gemma 2 with the micro Gemma's sizes and Gemma 2's own defaults (its logits
    soft-capped after the head, a sliding window on every other layer), ``settings`` changed."""
    import transformers

    torch.manual_seed(0)
    like = micro_config("gemma", len(tokenizer)).to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "pad_token_id",
            "bos_token_id", "eos_token_id")
    config = transformers.Gemma2Config(**{k: like[k] for k in keep}, **settings)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def micro_llama(tmp_path_factory, world_tokenizer) -> Path:
    return save_micro_model("llama", world_tokenizer, tmp_path_factory.mktemp("micro-llama"))


@pytest.fixture(scope="session")
def micro_gpt2(tmp_path_factory, world_tokenizer) -> Path:
    return save_micro_model("gpt2", world_tokenizer, tmp_path_factory.mktemp("micro-gpt2"))


@pytest.fixture(params=["llama", "gpt2"])
def micro_model_path(request, micro_llama, micro_gpt2) -> Path:
    return {"llama": micro_llama, "gpt2": micro_gpt2}[request.param]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"the shared data folder {SHARED_DATA} is absent (it lies beside the checkout in CI)"
        )
    return SHARED_DATA


def micro_edits(n: int) -> list[dict]:
    """``n`` edits in the JSONL schema, in the words the micro models' tokenizer knows."""
    return [{"uid": f"e{i}", "prompt": f"Fact: Kalo Mirve{i} lives in", "subject": f"Kalo Mirve{i}",
             "target_new": "Fengal Vale", "paraphrases": [f"Kalo Mirve{i} has a house in"],
             "neighbours": [{"prompt": "Wensel Quitho lives in", "answer": "Brajar Port"}]}
            for i in range(n)]


def write_edits(path: Path, n: int) -> Path:
    import json

    path.write_text("\n".join(json.dumps(edit) for edit in micro_edits(n)))
    return path


#: a small pocket world and a model trained on it in about 20 s: for the tests that need a model
#: that knows its facts (the default world's model is shipped, but is larger than they need)
SMALL_POCKET_WORLD = {"n_entities": 10, "n_cities": 6}


@pytest.fixture(scope="session")
def small_pocket(tmp_path_factory):
    """(world, cache folder, model config, model folder), trained once per session."""
    from editbench.tasks.pocket import PocketConfig, PocketWorld
    from editbench.tasks.pocket_model import PocketModelConfig, ensure_pocket_model

    world = PocketWorld(PocketConfig(**SMALL_POCKET_WORLD))
    config = PocketModelConfig(vocab_size=300, hidden_size=64, intermediate_size=128, n_layers=2,
                               steps=400, batch_size=32, lr=1e-2)
    cache = tmp_path_factory.mktemp("pocket")
    return world, cache, config, ensure_pocket_model(world, cache, config)
