import json

from click.testing import CliRunner

from editbench.harness.cli.group import main


def test_bench_runs_at_a_tiny_size_and_writes_its_json(tmp_path):
    result = CliRunner().invoke(main, [
        "bench", "--methods", "ft-m", "--sizes", "10,20", "--batch-size", "10", "--pairs", "20",
        "--repeats", "1", "--eval-sample", "5", "--gen-edits", "6", "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"device", "torch", "scoring", "edit_throughput", "micro_model"} <= set(data)
    scoring = data["scoring"]
    assert {"pairs", "batched_s", "batched_repeat_s", "one_at_a_time_s", "speedup"} <= set(scoring)
    # the batched probe and the one-pair-per-forward reference score the same pairs alike
    assert (
        scoring["pairs"] == 20 and scoring["repeats"] == 1 and scoring["prediction_mismatches"] == 0
    )
    assert scoring["max_logprob_difference"] < 1e-3
    generation = data["generation"]
    # the edit prompt and three paraphrases
    assert generation["edits"] == 6 and generation["prompts"] == 6 * 4
    assert generation["decoder_mismatches"] == 0 and generation["new_tokens"] > 0
    assert generation["teacher_forced_s"] > 0 and generation["generated_s"] > 0
    rows = data["edit_throughput"]
    assert [(r["method"], r["edits"]) for r in rows] == [("ft-m", 10), ("ft-m", 20)]
    for row in rows:
        assert {
            "edits_per_second", "seconds_per_edit", "peak_memory_mib", "overhead_share", "apply_s"
        } <= set(row)
        assert 0.0 <= row["overhead_share"] <= 1.0
    assert "edit throughput" in result.output and "harness overhead" in result.output
    assert "generated evaluation of 6 edits" in result.output
    assert (
        (tmp_path / "bench.png").stat().st_size > 0
        and "<svg" in (tmp_path / "bench.svg").read_text()
    )


def test_edit_throughput_gives_each_method_only_its_own_settings(tmp_path, micro_llama):
    from editbench.core.store import load_results
    from editbench.harness.checks.bench import edit_throughput

    rows = edit_throughput(
        micro_llama, tmp_path, ("ft-m", "ft-l"), (10,), batch_size=10, eval_sample=5,
        device="cpu", params={"ft-m": {"lr": "7e-4"}}
    )
    assert [(r["method"], r["edits"]) for r in rows] == [("ft-m", 10), ("ft-l", 10)]
    ft_m = json.loads(load_results(tmp_path / "runs" / "ft-m").cells().iloc[0]["method_config"])
    ft_l = json.loads(load_results(tmp_path / "runs" / "ft-l").cells().iloc[0]["method_config"])
    assert ft_m["lr"] == 7e-4 and ft_l["lr"] != 7e-4

def test_edit_throughput_refuses_a_setting_for_a_method_it_does_not_measure(tmp_path, micro_llama):
    import pytest

    from editbench.harness.checks.bench import edit_throughput

    with pytest.raises(ValueError, match="'mend' is neither the task nor a method"):
        edit_throughput(
            micro_llama, tmp_path, ("ft-m",), (10,), batch_size=10, eval_sample=5, device="cpu",
            params={"mend": {"lr": "1e-3"}}
        )
