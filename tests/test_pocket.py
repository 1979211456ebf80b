import torch

from editbench.core.models import load_model
from editbench.core.probe import HFProbe
from editbench.core.records import ScoringPair
from editbench.tasks.pocket import CHAIN_LINKS, TWO_HOPS, PocketConfig, PocketWorld
from editbench.tasks.pocket_model import ensure_pocket_model


def test_world_is_seeded_and_splits_are_disjoint():
    a, b = PocketWorld(PocketConfig(n_entities=30)), PocketWorld(PocketConfig(n_entities=30))
    assert a.records == b.records
    assert a.records != PocketWorld(PocketConfig(n_entities=30, world_seed=1)).records
    eval_subjects = {r.subject for r in a.records["eval"]}
    train_subjects = {r.subject for r in a.records["train"]}
    assert eval_subjects and train_subjects and not eval_subjects & train_subjects


def test_edits_are_counterfactual_and_neighbours_are_never_edited():
    world = PocketWorld(PocketConfig(n_entities=30))
    records = world.records["eval"] + world.records["train"]
    edited_prompts = {r.prompt for r in records}
    objects = {rel: set(objs) for rel, objs in world.objects.items()}
    for record in records:
        relation = record.extra["relation"]
        assert record.target_new != record.target_true
        assert record.target_new in objects[relation]
        assert len(record.paraphrases) == 3 and record.neighbours
        assert not {n.prompt for n in record.neighbours} & edited_prompts
        assert any(len(word) > 0 for word in record.target_new.split())


def test_paraphrases_are_held_out_of_training_text():
    world = PocketWorld(PocketConfig(n_entities=20))
    training = "\n".join(world.training_sentences())
    record = world.records["eval"][0]
    assert f"{record.prompt} {record.target_true}." in training
    for paraphrase in record.paraphrases:
        assert f"{paraphrase} {record.target_true}." not in training


def test_pocket_model_learns_the_world_and_is_cached(small_pocket, caplog):
    world, cache, config, path = small_pocket
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    records = world.records["eval"]
    scores = HFProbe(model, tokenizer, torch.device("cpu")).score(
        [ScoringPair(r.prompt, r.target_true) for r in records])
    accuracy = sum(s.token_accuracy for s in scores) / len(scores)
    # chance is well below a third for these object sets; 0.93-0.96 over AVX-512/AVX2 kernels, MKL's
    # AVX2 path and one or two threads
    assert accuracy > 0.8
    mtime = (path / "model.safetensors").stat().st_mtime
    with caplog.at_level("INFO"):
        assert ensure_pocket_model(world, cache, config) == path
    assert "loaded the cached pocket model" in caplog.text
    assert (path / "model.safetensors").stat().st_mtime == mtime


def test_no_edited_fact_is_in_any_locality_set_and_two_hop_answers_follow_the_facts():
    world = PocketWorld(PocketConfig(n_entities=30))
    records = world.records["eval"] + world.records["train"]
    edited = {r.prompt for r in records}
    for record in records:
        assert set(record.locality) == {"unrelated", "subject"}
        for name, items in record.locality.items():
            assert items and not {n.prompt for n in items} & {record.prompt}
            if name == "unrelated":
                assert not {n.prompt for n in items} & edited
        assert all(
            n.prompt.startswith(record.subject) or record.subject in n.prompt
            for n in record.locality["subject"]
        )
        for question in record.portability:
            if question.kind == "alias":
                assert (
                    question.answer == record.target_new and question.before == record.target_true
                )
            else:
                relation = record.extra["relation"]
                name = next(n for n, (_, first, _) in TWO_HOPS.items() if first == relation)
                if question.kind == "two_hop":
                    assert question.before == world.two_hop_answer(record.subject, name)
                    assert question.answer == world.two_hop_answer(
                        record.subject, name, record.target_new
                    )
                else:  # step by step: the first hop stated, then the second hop from it
                    assert question.kind == "two_hop_chain"
                    second = world.two_hop_answer(record.subject, name, record.target_new)
                    assert question.answer == f"{record.target_new}, {CHAIN_LINKS[name]} {second}"
                    assert question.prompt == f"Step by step: {record.prompt}"
                # the new object was chosen so the answer changes
                assert question.answer != question.before
    assert len(set(world.objects)) >= 10 and min(map(len, world.objects.values())) <= 6
    assert max(map(len, world.objects.values())) >= 30


def test_two_hop_sentences_are_trained_for_train_and_pool_people_only():
    world = PocketWorld(PocketConfig(n_entities=20))
    training = "\n".join(world.training_sentences())
    for entity in world.entities:
        sentence = (
            f"{world.two_hop_prompt(entity, 'home_country')} "
            f"{world.two_hop_answer(entity, 'home_country')}."
        )
        assert (sentence in training) == (world.entity_split(entity) != "eval")
        chain = (
            f"{world.chain_prompt(entity, 'spouse_city')} "
            f"{world.chain_answer(entity, 'spouse_city')}."
        )
        assert (chain in training) == (world.entity_split(entity) != "eval")



def test_length_grouped_batches_cover_each_sentence_once_per_epoch_with_less_padding():
    import random

    from editbench.tasks.pocket_model import length_grouped_batches

    rng = random.Random(0)
    lengths = [rng.choice((6, 8, 10, 28)) for _ in range(640)]  # short facts and a few long chains
    grouped = length_grouped_batches(lengths, 16, 8, random.Random(1))
    epoch = [next(grouped) for _ in range(640 // 16)]
    flat = [i for batch in epoch for i in batch]
    assert all(len(b) == 16 for b in epoch) and len(set(flat)) == len(flat) == 640
    plain = length_grouped_batches(lengths, 16, 1, random.Random(1))
    padded = {name: sum(16 * max(lengths[i] for i in b) for b in batches)
              for name, batches in (("grouped", epoch),
                                    ("plain", [next(plain) for _ in range(40)]))}
    assert padded["grouped"] < 0.75 * padded["plain"]
