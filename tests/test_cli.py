import json

from click.testing import CliRunner

from editbench.harness.cli.group import main


def test_list_shows_methods_and_tasks():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in ("ft-l", "ft-m", "pocket", "jsonl"):
        assert f"  {name} " in result.output


def test_run_help_documents_every_option():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--methods", "--task", "--data", "--edits", "--batch-size", "--checkpoints",
                   "--eval-sample", "--model", "--dtype", "--device", "--seed", "--out", "--param",
                   "--trust-remote-code", "--restart"):
        assert option in result.output
    assert "--debug" in CliRunner().invoke(main, ["--help"]).output


def test_run_on_a_user_jsonl_task_prints_the_summary(tmp_path, micro_gpt2):
    path = tmp_path / "mine.jsonl"
    lines = [{"prompt": f"Fact: Kalo Mirve{i} lives in", "subject": f"Kalo Mirve{i}",
              "target_new": "Fengal Vale", "paraphrases": [f"Kalo Mirve{i} has a house in"],
              "neighbours": [{"prompt": "Wensel Quitho lives in", "answer": "Brajar Port"}]}
             for i in range(6)]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    result = CliRunner().invoke(main, [
        "run", "--task", str(path), "--model", str(micro_gpt2), "--methods", "ft-m",
        "--batch-size", "3", "--out", str(tmp_path / "out"), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "ft-m" in result.output and "efficacy" in result.output
    assert "task=jsonl" in result.output


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, micro_gpt2):
    result = CliRunner().invoke(main, [
        "run", "--model", str(micro_gpt2), "--param", "pocket.n_entities=20",
        "--edits", "5000", "--out", str(tmp_path),
    ])
    assert result.exit_code != 0
    assert "--edits 5000" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(
        main, ["run", "--task", str(tmp_path / "missing.jsonl"), "--model", str(micro_gpt2)]
    )
    assert result.exit_code != 0 and "missing.jsonl" in result.output


def test_threads_sets_torch_threads_and_refuses_zero(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert CliRunner().invoke(main, ["--threads", "1", "list"]).exit_code == 0
    assert calls == [1]
    refused = CliRunner().invoke(main, ["--threads", "0", "list"])
    assert refused.exit_code == 2 and "--threads" in refused.output


def test_global_options_work_after_the_command_too():
    from editbench.harness.cli.group import hoist_global_options

    commands = {"run", "report"}
    assert hoist_global_options(["run", "--threads", "1", "--edits", "5", "-v"], commands) == \
        ["--threads", "1", "-v", "run", "--edits", "5"]
    assert hoist_global_options(["--debug", "report", "out", "--threads=2"], commands) == \
        ["--debug", "--threads=2", "report", "out"]
    assert hoist_global_options(["run", "--param", "ft-m.lr=1", "--", "--threads"], commands) == \
        ["run", "--param", "ft-m.lr=1", "--", "--threads"]
    result = CliRunner().invoke(main, ["list", "--methods", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "ft-m" in result.output


def test_list_shows_presets_and_which_the_model_picks():
    brief = CliRunner().invoke(main, ["list", "--methods"])
    assert "presets: @paper, @release, @rledit-release" in brief.output
    assert "for gpt-j-6b" in brief.output and "(picked by the model)" in brief.output
    full = CliRunner().invoke(main, ["list", "--presets"])
    assert full.exit_code == 0, full.output
    # ft-m, EasyEdit's Llama-3 settings
    assert "@llama-3-8b (picked by the model): layer=21" in full.output
    assert "@release: " in full.output and "tasks:" not in full.output


