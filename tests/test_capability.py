import json

import pytest

from editbench.core.records import PairScore
from editbench.core.store import load_results
from editbench.harness.evaluation.capability import (
    CAPABILITY_SETS,
    CapabilitySettings,
    capability_accuracy,
    load_capability_sets,
)
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running.runner import Runner


class PrefersSecondChoice:
    """A fake probe backend whose answer is always the second choice."""

    def score(self, pairs):
        return [
            PairScore(
                0.0, -1.0 if pair.target in ("positive", "Yes", "False", "B") else -5.0, 1, ()
            )
            for pair in pairs
        ]


def test_every_shared_probe_file_has_the_expected_layout(shared_data):
    settings = CapabilitySettings(
        tuple(CAPABILITY_SETS), data=str(shared_data / "glue"), limit=20, shots=2
    )
    sets = load_capability_sets(settings)
    assert [s.name for s in sets] == list(CAPABILITY_SETS)
    for probe_set in sets:
        assert len(probe_set.questions) == 20
        assert probe_set.shots_text.count("\n\n") == 2
        shots = {q for q in probe_set.shots_text.split("\n\n") if q}
        # shots are never asked
        assert not any(q + " " + c[g] in shots for q, c, g in probe_set.questions)


def test_accuracy_is_the_share_of_right_answers(tmp_path):
    # labels 1 at i = 0, 4, 8, 12
    rows = [{"sentence": f"s{i}", "label": i % 4 == 0} for i in range(13)]
    (tmp_path / "sst2.jsonl").write_text(
        "\n".join(json.dumps({**r, "label": int(r["label"])}) for r in rows)
    )
    settings = CapabilitySettings(("sst2",), data=str(tmp_path), limit=100, shots=1)
    (probe_set,) = load_capability_sets(settings)
    expected = sum(gold == 1 for _, _, gold in probe_set.questions) / len(probe_set.questions)
    assert capability_accuracy(PrefersSecondChoice(), [probe_set]) == {
        "sst2": (12, pytest.approx(expected))
    }


def test_unknown_set_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown set 'glue'"):
        CapabilitySettings(("glue",))
    with pytest.raises(FileNotFoundError, match="no mmlu.json"):
        load_capability_sets(CapabilitySettings(("mmlu",), data=str(tmp_path)))


def test_runs_store_capability_for_the_unedited_model_and_the_chosen_checkpoints(
    shared_data, tmp_path, micro_llama
):
    spec = RunSpec(
        methods=("ft-m",), model=str(micro_llama), edits=8, batch_size=4, out=tmp_path / "o",
        device="cpu", cache_dir=tmp_path, params={"pocket": {"n_entities": "20"}},
        capability=("sst2", "mmlu"), capability_data=str(shared_data / "glue"), capability_limit=5,
        capability_at="4,8", checkpoints="4,8"
    )
    Runner(resolve(spec)).run()
    frame = load_results(spec.out).capability()
    assert set(zip(frame["method"], frame["n_edits"])) == {("", 0), ("ft-m", 4), ("ft-m", 8)}
    assert set(frame["name"]) == {"sst2", "mmlu"} and set(frame["n"]) == {5}
