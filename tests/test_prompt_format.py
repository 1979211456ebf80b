"""``--prompt-format`` (``core/prompts.py``): raw is the encoding editbench always had; ``chat``
shows each prompt in the tokenizer's chat template with the answer starting the assistant's turn,
for a method's edit and both kinds of scoring alike; a model without a template is refused, a
templated one run raw is warned about once; ``qa`` and ``fewshot`` render as documented."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import save_micro_model, tiny_world

from editbench.core.micro import add_chat_template, train_tokenizer
from editbench.core.models import ModelLayout, load_model
from editbench.core.probe import HFProbe
from editbench.core.prompts import (
    BUILTIN_EXAMPLES,
    QA_TEMPLATE,
    PromptFormat,
    fewshot_examples,
)
from editbench.core.records import EditRecord, ScoringPair
from editbench.core.tokenize import PairEncoder
from editbench.harness.plan.resolve import resolve, resolve_sweep
from editbench.harness.plan.settings import RunSpec
from editbench.methods import EditContext
from editbench.methods.ft import FTM, FTConfig
from editbench.methods.locate.prompts import subject_last_index

CPU = torch.device("cpu")
CHAT = PromptFormat("chat")
POCKET = {"pocket": {"n_entities": "20"}}
RECORD = EditRecord(uid="0", prompt="Fact: Kalo Mirve lives in", subject="Kalo Mirve",
                    target_new="Fengal Vale")


@pytest.fixture(scope="module")
def chat_tokenizer():
    return add_chat_template(train_tokenizer(tiny_world().training_sentences(), vocab_size=300))


@pytest.fixture(scope="module")
def micro_chat(tmp_path_factory, chat_tokenizer):
    """A micro Llama whose tokenizer has a chat template (``core/micro.py``)."""
    return save_micro_model("llama", chat_tokenizer, tmp_path_factory.mktemp("micro-chat"))


def _pairs():
    return [(r.prompt, r.target_new) for r in tiny_world().records["eval"][:40]]


def test_raw_encodes_as_before(world_tokenizer):
    """Raw: the tokenizer's own encoding of the prompt, and of prompt, a space and the target."""
    encoder = PairEncoder(world_tokenizer)
    for prompt, target in _pairs():
        pair = encoder.encode(prompt, target)
        assert pair.ids == tuple(world_tokenizer(f"{prompt} {target}")["input_ids"])
        assert pair.n_prompt == len(world_tokenizer(prompt)["input_ids"])
        assert encoder.encode_prompt(prompt) == world_tokenizer(prompt)["input_ids"]
        end = prompt.index(" ") if " " in prompt else len(prompt)
        through = world_tokenizer(prompt[:end])["input_ids"]
        assert encoder.tokens_through(prompt, end) == len(through)


def test_chat_shows_the_template_with_the_answer_starting_the_assistant_turn(chat_tokenizer):
    encoder = PairEncoder(chat_tokenizer, CHAT)
    bos = chat_tokenizer.bos_token_id
    for prompt, target in _pairs():
        pair = encoder.encode(prompt, target)
        rendered = chat_tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      add_generation_prompt=True, tokenize=True)
        rendered = list(getattr(rendered, "input_ids", rendered))
        assert list(pair.ids[: pair.n_prompt]) == rendered
        assert list(pair.ids[pair.n_prompt:]) == chat_tokenizer(
            target, add_special_tokens=False)["input_ids"]
        assert pair.ids.count(bos) == 1 and pair.ids[0] == bos  # the template's BOS, once
        assert chat_tokenizer.convert_ids_to_tokens(pair.ids[pair.n_prompt - 1]) == "<|assistant|>"
        assert encoder.encode_prompt(prompt) == rendered  # generation starts from the same ids


def test_subject_positions_are_found_inside_the_template(chat_tokenizer):
    """ROME/MEMIT read the subject's last token: under chat it lies after the template's header."""
    encoder = PairEncoder(chat_tokenizer, CHAT)
    ids = encoder.encode_prompt(RECORD.prompt)
    at = subject_last_index(encoder, RECORD.prompt, RECORD.subject)
    read = chat_tokenizer.decode(ids[: at + 1], skip_special_tokens=True)
    assert read.endswith(RECORD.subject) and read.startswith("Fact:")
    assert at < len(ids) - 1


def test_ft_m_edits_and_both_scorings_see_the_same_chat_positions(micro_chat):
    model, tokenizer = load_model(micro_chat, CPU, torch.float32)
    ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=CPU,
                      cache_dir=micro_chat, task=None, seed=0,
                      generator=torch.Generator().manual_seed(0), prompt_format=CHAT)
    probe = HFProbe(model, tokenizer, CPU, prompt_format=CHAT)
    seen = []
    collate = ctx.encoder.collate
    ctx.encoder.collate = lambda pairs: seen.append(collate(pairs)) or seen[-1]
    FTM(FTConfig(lr=2e-2, steps=300, stop_loss=1e-3), ctx).apply([RECORD])

    edited = seen[0]  # the rows ft-m's loss is computed on
    scored = probe.encoder.collate(probe.encoder.encode_many([(RECORD.prompt, RECORD.target_new)]))
    assert torch.equal(edited.input_ids, scored.input_ids)
    assert torch.equal(edited.target_mask, scored.target_mask)
    assert torch.equal(edited.labels[edited.target_mask], scored.labels[scored.target_mask])

    pair = ScoringPair(RECORD.prompt, RECORD.target_new)
    assert probe.score([pair])[0].token_accuracy == 1.0  # teacher-forced, in the template
    (answer,) = probe.generate_answers([pair], max_new_tokens=16)  # generated, from the same ids
    assert answer.startswith(RECORD.target_new)


def test_a_model_without_a_chat_template_is_refused_in_one_line(micro_llama, world_tokenizer,
                                                                tmp_path):
    with pytest.raises(ValueError, match="--prompt-format chat") as caught:
        PairEncoder(world_tokenizer, CHAT)
    assert "\n" not in str(caught.value)
    spec = RunSpec(task="pocket", model=str(micro_llama), edits=4, batch_size=2, params=POCKET,
                   methods=("ft-m",), device="cpu", out=tmp_path / "out", prompt_format="chat")
    with pytest.raises(ValueError, match="--prompt-format chat.*no chat template") as caught:
        resolve(spec)
    assert "\n" not in str(caught.value)


def test_a_templated_model_run_raw_is_warned_about_once(micro_chat, tmp_path, caplog):
    spec = RunSpec(task="pocket", model=str(micro_chat), edits=4, batch_size=2, params=POCKET,
                   methods=("ft-m",), device="cpu", out=tmp_path / "out", seed=(0, 1))
    with caplog.at_level(logging.WARNING):
        plans = resolve_sweep(spec)
    warnings = [r.getMessage() for r in caplog.records if "chat template" in r.getMessage()]
    assert len(plans) == 2 and len(warnings) == 1
    assert "--prompt-format chat" in warnings[0] and "\n" not in warnings[0]


def test_only_a_format_other_than_raw_enters_the_run_config(micro_chat, tmp_path):
    """Raw runs keep the ids they had before formats existed."""
    base = dict(task="pocket", model=str(micro_chat), edits=4, batch_size=2, params=POCKET,
                methods=("ft-m",), device="cpu", out=tmp_path / "out")
    raw = resolve(RunSpec(**base))
    chat = resolve(RunSpec(**base, prompt_format="chat"))
    assert not {"prompt_format", "fewshot_examples"} & raw.run_config.keys()
    assert raw.prompt_format.is_raw
    assert chat.run_config["prompt_format"] == "chat" and chat.run_id != raw.run_id


def test_qa_and_fewshot_render_as_documented(world_tokenizer):
    assert QA_TEMPLATE == "Please answer the question:\n\nQ: {prompt}\nA:"  # QAEdit's qa_inst
    assert PromptFormat("qa").render("Who leads X?") == (
        "Please answer the question:\n\nQ: Who leads X?\nA:")
    shots = (("A is in", "B"), ("C works for", "D"), ("E speaks", "F"))
    assert PromptFormat("fewshot", shots).render("G lives in") == (
        "A is in B\nC works for D\nE speaks F\nG lives in")
    pair = PairEncoder(world_tokenizer, PromptFormat("qa")).encode("Who leads X?", "Y")
    assert pair.ids == tuple(world_tokenizer(QA_TEMPLATE.format(prompt="Who leads X?") + " Y")
                             ["input_ids"])


def test_fewshot_examples_are_drawn_once_from_the_train_split(micro_chat, tmp_path):
    records = [EditRecord(uid=str(i), prompt=f"P{i} is in", subject=f"P{i}", target_new="x",
                          target_true=f"T{i}") for i in range(10)]
    drawn = fewshot_examples(records)
    assert drawn == fewshot_examples(records) and len(drawn) == 3
    assert all(answer.startswith("T") for _, answer in drawn)
    assert fewshot_examples(records[:2]) == BUILTIN_EXAMPLES

    base = dict(task="pocket", model=str(micro_chat), edits=4, batch_size=2, params=POCKET,
                methods=("ft-m",), device="cpu", out=tmp_path / "out", prompt_format="fewshot")
    plans = resolve_sweep(RunSpec(**base, seed=(0, 1)))
    examples = [plan.run_config["fewshot_examples"] for plan in plans]
    assert examples[0] == examples[1]  # the same whatever the seed
    assert plans[0].prompt_format.examples == tuple(map(tuple, examples[0]))
    edited = {r.prompt for plan in plans for r in plan.records}
    assert not edited & {prompt for prompt, _ in examples[0]}  # never an evaluated edit


def test_a_chat_run_edits_and_scores_in_the_template(micro_chat, tmp_path):
    from editbench.core.store import load_results
    from editbench.harness.running.runner import Runner

    spec = RunSpec(task="pocket", model=str(micro_chat), edits=4, batch_size=2, params=POCKET,
                   methods=("ft-m",), device="cpu", out=tmp_path / "out", prompt_format="chat",
                   cache_dir=tmp_path / "cache", checkpoints=(4,))
    outcome = Runner(resolve(spec)).run()
    assert outcome.ok
    store = load_results(spec.out)
    try:
        config = store.runs().set_index("run_id").loc[outcome.run_id, "config"]
        scores = store.scores()
    finally:
        store.close()
    assert config["prompt_format"] == "chat"
    assert len(scores) > 0
