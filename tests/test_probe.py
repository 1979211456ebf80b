import torch

from editbench.core.models import load_model
from editbench.core.probe import HFProbe
from editbench.core.records import PairScore, ScoringPair
from editbench.core.tokenize import PairEncoder


def test_target_positions_follow_the_prompt(world_tokenizer):
    encoder = PairEncoder(world_tokenizer)
    pair = encoder.encode("Fact: somebody lives in", "Ostwen Ford")
    prompt_ids = encoder.encode_prompt("Fact: somebody lives in")
    assert list(pair.ids[: pair.n_prompt]) == prompt_ids
    assert world_tokenizer.decode(pair.ids[pair.n_prompt:]) == " Ostwen Ford"
    batch = encoder.collate([pair, encoder.encode("x", "y")])
    row = batch.target_mask[0].nonzero().squeeze(1)
    assert row.tolist() == list(range(pair.n_prompt - 1, len(pair.ids) - 1))
    assert batch.labels[0, row].tolist() == list(pair.ids[pair.n_prompt:])
    assert batch.prompt_last[0] == pair.n_prompt - 1


def test_a_left_padded_batch_holds_the_same_targets_and_predicts_them_alike(micro_llama):
    """``collate(left=True)`` (WISE's release-style training batch): each row's target tokens and
    the logits that predict them are those of the right-padded batch, shifted past the pads."""
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    encoder = PairEncoder(tokenizer)
    pairs = encoder.encode_many([("Fact: somebody lives in", "Ostwen Ford"), ("x", "y")])
    right, left = encoder.collate(pairs), encoder.collate(pairs, left=True, pad_id=2)
    short = left.attention_mask[1]
    assert short[0] == 0 and short[-1] == 1  # pads in front
    assert left.input_ids[1][short == 0].eq(2).all()
    with torch.no_grad():
        logits = [model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
                  for b in (right, left)]
    for row in range(2):
        r, lt = right.target_mask[row], left.target_mask[row]
        assert r.sum() == lt.sum() > 0
        assert torch.equal(right.labels[row][r], left.labels[row][lt])
        assert left.prompt_last[row] == lt.nonzero()[0, 0]
        assert torch.allclose(logits[0][row][r], logits[1][row][lt], atol=1e-4)


def test_scores_match_a_direct_unpadded_computation(micro_model_path):
    model, tokenizer = load_model(micro_model_path, torch.device("cpu"), torch.float32)
    # forces several padded batches
    probe = HFProbe(model, tokenizer, torch.device("cpu"), max_tokens=64)
    pairs = [
        ScoringPair("A b c", "d e f g"), ScoringPair("Hello", "world"), ScoringPair("q", "r s")
    ] * 3
    scores = probe.score(pairs)
    encoder = PairEncoder(tokenizer)
    for pair, score in zip(pairs, scores):
        enc = encoder.encode(pair.prompt, pair.target)
        ids = torch.tensor([enc.ids])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        positions = range(enc.n_prompt - 1, len(enc.ids) - 1)
        labels = [enc.ids[i + 1] for i in positions]
        argmax = [int(logprobs[i].argmax()) for i in positions]
        assert score.predictions == tuple(argmax)
        assert score.n_tokens == len(labels)
        assert abs(
            score.logprob - sum(float(logprobs[i, lab]) for i, lab in zip(positions, labels))
        ) < 1e-4
        assert score.token_accuracy == sum(a == lab for a, lab in zip(argmax, labels)) / len(labels)
    assert probe.head_only  # the batches after the first took the head-only path and still agree


def test_a_model_whose_logits_the_head_alone_does_not_give_is_scored_from_full_logits(micro_llama):
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    pairs = [ScoringPair("A b c", "d e f g"), ScoringPair("Hello", "world")] * 4
    expected = HFProbe(model, tokenizer, torch.device("cpu")).score(pairs)
    # Llama's forward ignores it; the head-only path would not
    model.config.final_logit_softcapping = 0.5
    probe = HFProbe(model, tokenizer, torch.device("cpu"), max_tokens=16)
    assert probe.score(pairs) == expected
    assert probe.head_only is False


def test_token_accuracy_right_wrong_and_half_right():
    """Hand-built case: a model that always predicts token 5."""

    class Always5(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 10)
            logits[..., 5] = 1.0
            return type("Out", (), {"logits": logits})()

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=True):  # one text or a list, as Hugging Face's
            def ids(one):
                return [ord(t) % 10 if not t.isdigit() else int(t) for t in one.split()]

            return {"input_ids": [ids(t) for t in text] if isinstance(text, list) else ids(text)}

    probe = HFProbe(Always5(), Tok(), torch.device("cpu"))
    right, wrong, half = probe.score(
        [ScoringPair("1 2", "5 5"), ScoringPair("1 2", "3 4"), ScoringPair("1", "5 7")]
    )
    assert (right.token_accuracy, wrong.token_accuracy, half.token_accuracy) == (1.0, 0.0, 0.5)
    assert right.predictions == (5, 5)


def test_agreement_counts_matching_tokens():
    a = PairScore(1.0, 0.0, 4, (1, 2, 3, 4))
    assert a.agreement(PairScore(0.0, 0.0, 4, (1, 2, 0, 0))) == 0.5


def test_the_fast_path_of_the_encoder_gives_the_tokenizers_own_ids(world_tokenizer):
    texts = [
        "Fact: somebody lives in", "Fact: somebody lives in Ostwen Ford", "x y", "héllo  wörld"
    ]
    assert world_tokenizer.is_fast
    # with its special tokens, as the encoder keeps them
    expected = [world_tokenizer.encode(t) for t in texts]
    assert PairEncoder(world_tokenizer)._ids_many(texts) == expected


def test_pair_encoder_batches_match_single_encodings_and_masks_mark_target_predictions():
    class Tok:  # whitespace words to ids; "=" merges with the word after it, across the boundary
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            def ids(one):
                words = one.replace("= ", "=").split()
                return ([1] if add_special_tokens else []) + [
                    10 + sum(map(ord, w)) % 50 for w in words
                ]

            return {"input_ids": [ids(t) for t in text] if isinstance(text, list) else ids(text)}

    pairs = [("a b c", "d"), ("a", "e f"), ("x =", "y"), ("a", "e f")]
    batched = PairEncoder(Tok()).encode_many(pairs)
    assert batched == [PairEncoder(Tok()).encode(p, t) for p, t in pairs]
    assert [(len(e.ids), e.n_prompt) for e in batched] == [(5, 4), (4, 2), (4, 3), (4, 2)]
    # merged: pieces
    assert batched[2].ids[-1] == Tok()(" y", add_special_tokens=False)["input_ids"][0]
    batch = PairEncoder(Tok()).collate(batched[:2])
    ids = batched[1].ids
    assert batch.input_ids[1].tolist() == [*ids, 0]
    assert batch.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 1, 0]]
    assert batch.target_mask.tolist() == [
        [False, False, False, True, False], [False, True, True, False, False]
    ]
    assert batch.labels[1, :3].tolist() == list(ids[1:]) and batch.labels[1, 3:].tolist() == [0, 0]
    assert batch.prompt_last.tolist() == [3, 1]


def test_generation_uses_the_task_settings_whatever_the_checkpoint_asks(micro_llama):
    """A checkpoint's generation_config (sampling temperature, top-p, a repetition penalty) must not
    change how a task's text is generated: the run's settings alone decide."""
    from transformers import GenerationConfig

    from editbench.core.probe import GenerationSettings

    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    probe = HFProbe(model, tokenizer, torch.device("cpu"))
    prompts = ["Fact: somebody lives in", "The profession of x is"]
    for settings in (
        GenerationSettings(max_new_tokens=6, top_k=1),
        GenerationSettings(max_new_tokens=6, top_k=5),
    ):
        plain = probe.generate(prompts, settings)
        own = GenerationConfig(
            do_sample=True, temperature=0.05, top_p=0.2, repetition_penalty=8.0, max_new_tokens=2
        )
        model.generation_config = own
        assert probe.generate(prompts, settings) == plain
        assert model.generation_config is own  # the checkpoint's own config is left as it was
