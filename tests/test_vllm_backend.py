"""The vLLM probe backend against stand-ins for the vLLM releases it supports (``fake_vllm.py``):
no GPU and no vLLM needed. The real engine's parity test is ``test_vllm.py`` (GPU only)."""

import os
import random

import pytest
import torch
from fake_vllm import RELEASES, install

from editbench.core.models import load_model
from editbench.core.probe import GenerationSettings, HFProbe
from editbench.core.probe_vllm import (
    IN_PROCESS_VARIABLE,
    KV_BLOCK,
    VLLMProbe,
    engine_length,
    parse_version,
    version_problem,
)
from editbench.core.records import EditRecord, Neighbour, ScoringPair
from editbench.harness.checks.vllm_parity import edit_tensors, parity_pairs, vllm_parity

VERSIONS = sorted(RELEASES)
EDITED = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture
def hf(micro_llama):
    return load_model(micro_llama, torch.device("cpu"), torch.float32)


def build(monkeypatch, version, micro_llama, tokenizer, **kwargs):
    loaded = install(monkeypatch, version)
    probe = VLLMProbe(str(micro_llama), tokenizer, torch.float32, 0.3,
                      max_model_len=kwargs.pop("max_model_len", 96), **kwargs)
    return probe, loaded[-1]


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_is_built_in_process_without_prefix_caching(monkeypatch, micro_llama, hf, version):
    monkeypatch.delenv(IN_PROCESS_VARIABLE, raising=False)
    monkeypatch.delenv("VLLM_ALLOW_INSECURE_SERIALIZATION", raising=False)
    probe, llm = build(monkeypatch, version, micro_llama, hf[1], max_model_len=80)
    assert llm.kwargs["enable_prefix_caching"] is False
    assert llm.kwargs["max_model_len"] == 80
    assert llm.kwargs["seed"] == 0 and llm.kwargs["dtype"] == "float32"
    assert llm.environment == {IN_PROCESS_VARIABLE: "0", "VLLM_ALLOW_INSECURE_SERIALIZATION": None}
    assert IN_PROCESS_VARIABLE not in os.environ  # put back as it was
    assert probe.version == version


def test_a_users_multiprocessing_setting_is_restored(monkeypatch, micro_llama, hf):
    monkeypatch.setenv(IN_PROCESS_VARIABLE, "1")
    _, llm = build(monkeypatch, "0.11.0", micro_llama, hf[1])
    assert llm.environment[IN_PROCESS_VARIABLE] == "0"
    assert os.environ[IN_PROCESS_VARIABLE] == "1"


@pytest.mark.parametrize("version", ["0.8.5", "0.11.0", "0.33.0"])
def test_the_stand_in_refuses_the_old_route_out_of_process(monkeypatch, micro_llama, hf, version):
    """What the backend before this change did on 0.8+: the stand-in fails as the releases do."""
    monkeypatch.setenv(IN_PROCESS_VARIABLE, "1")
    loaded = install(monkeypatch, version)
    import vllm

    llm = vllm.LLM(model=str(micro_llama))
    error = AttributeError if version == "0.8.5" else TypeError
    with pytest.raises(error):
        llm.apply_model(lambda model: None)
    assert loaded


@pytest.mark.parametrize("version", ["0.8.5", "0.11.0"])
def test_an_engine_out_of_process_is_refused_with_a_clear_error(
    monkeypatch, micro_llama, hf, version
):
    from contextlib import nullcontext

    from editbench.core import probe_vllm

    monkeypatch.setenv(IN_PROCESS_VARIABLE, "1")
    monkeypatch.setattr(probe_vllm, "_engine_in_this_process", nullcontext)
    with pytest.raises(RuntimeError, match="another process"):
        build(monkeypatch, version, micro_llama, hf[1])


@pytest.mark.parametrize("version", VERSIONS)
def test_sync_reaches_the_engine_and_restores_what_an_earlier_sync_changed(
    monkeypatch, micro_llama, hf, version
):
    model, tokenizer = hf
    probe, llm = build(monkeypatch, version, micro_llama, tokenizer)
    engine_weight = llm.model.hf.get_parameter(EDITED)
    original = model.get_parameter(EDITED).detach().clone()
    probe.sync(model, [])
    assert llm.model.loads == 0  # nothing edited, nothing sent
    with torch.no_grad():
        model.get_parameter(EDITED).add_(1.0)
    probe.sync(model, [EDITED])
    torch.testing.assert_close(engine_weight, original + 1.0)
    with torch.no_grad():  # the next method starts from the base weights and edits another tensor
        model.get_parameter(EDITED).copy_(original)
    probe.sync(model, ["model.layers.0.mlp.down_proj.weight"])
    torch.testing.assert_close(engine_weight, original)


def test_every_sync_that_sends_tensors_empties_the_prefix_cache(monkeypatch, micro_llama, hf):
    model, tokenizer = hf
    probe, llm = build(monkeypatch, "0.33.0", micro_llama, tokenizer)
    llm.cache[(1,) * KV_BLOCK] = {}
    probe.sync(model, [])
    assert llm.cache  # no tensors sent, the cache is still right
    probe.sync(model, [EDITED])
    assert not llm.cache


@pytest.mark.parametrize("version", VERSIONS)
def test_scores_equal_the_hf_backend_before_and_after_a_sync(monkeypatch, micro_llama, hf, version):
    model, tokenizer = hf
    probe, _ = build(monkeypatch, version, micro_llama, tokenizer)
    reference = HFProbe(model, tokenizer, torch.device("cpu"))
    pairs = [ScoringPair(f"Fact: Kalo Mirve{i} lives in", "Fengal Vale") for i in range(4)]

    def agree():
        for a, b in zip(reference.score(pairs), probe.score(pairs), strict=True):
            assert a.predictions == b.predictions and a.token_accuracy == b.token_accuracy
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)

    agree()
    edit_tensors(model)
    probe.sync(model, [n for n, _ in model.named_parameters() if "mlp.down_proj" in n])
    agree()


def test_generation_uses_the_hf_backends_sampling_settings(monkeypatch, micro_llama, hf):
    model, tokenizer = hf
    probe, llm = build(monkeypatch, "0.33.0", micro_llama, tokenizer)
    probe.sync(model, [])
    probe.generate(["Fact: Kalo"], GenerationSettings(max_new_tokens=6, top_k=1, seed=3))
    greedy = llm.requests[-1][1]
    assert greedy.temperature == 0.0 and greedy.max_tokens == 6 and greedy.seed == 3
    # no top-k cut
    assert greedy.top_k == 0 and greedy.top_p == 1.0 and greedy.repetition_penalty == 1.0
    assert greedy.stop_token_ids == [model.generation_config.eos_token_id]
    probe.generate(["Fact: Kalo"], GenerationSettings(max_new_tokens=6, top_k=5, seed=3))
    sampled = llm.requests[-1][1]
    assert (sampled.temperature, sampled.top_k, sampled.top_p, sampled.seed) == (1.0, 5, 1.0, 3)


def test_greedy_texts_equal_the_hf_backend(monkeypatch, micro_llama, hf):
    model, tokenizer = hf
    probe, _ = build(monkeypatch, "0.11.0", micro_llama, tokenizer)
    probe.sync(model, [])
    reference = HFProbe(model, tokenizer, torch.device("cpu"))
    prompts = ["Fact: Kalo Mirve lives in", "Fengal Vale is"]
    settings = GenerationSettings(max_new_tokens=5, top_k=1)
    assert probe.generate(prompts, settings) == reference.generate(prompts, settings)
    pairs = [ScoringPair(p, "Fengal Vale") for p in prompts]
    assert probe.generate_answers(pairs, 8) == reference.generate_answers(pairs, 8)


def test_answers_stop_as_the_hf_backend_stops(monkeypatch, micro_llama, hf):
    """Each answer gets its own budget, stops at end of sequence or a newline token, and the stop
    token is not part of it (the stand-in returns the stop token among the new ids, as vLLM
    does)."""
    from editbench.core.generate import StopRule, answer_budget

    model, tokenizer = hf
    probe, llm = build(monkeypatch, "0.8.5", micro_llama, tokenizer)
    probe.sync(model, [])
    pairs = [
        ScoringPair("Fact: Kalo", "Fengal"),
        ScoringPair("Fact: Kalo", "Fengal Vale lives in the"),
    ]
    probe.generate_answers(pairs, 5)
    rule = StopRule.for_model(model, tokenizer)
    sent = [params for _, params in llm.requests[-2:]]
    assert set(sent[0].stop_token_ids) == rule.ids and sent[0].temperature == 0.0
    budgets = [answer_budget(probe.encoder.encode(p.prompt, p.target).n_target, 5) for p in pairs]
    assert [p.max_tokens for p in sent] == budgets
    stop = next(iter(rule.ids - {tokenizer.eos_token_id}))
    llm._one = lambda ids, params: type(
        "Out", (), {"outputs": [type("C", (), {"token_ids": (5, 6, stop)})]}
    )()
    assert probe.generate_answers(pairs[:1], 5) == [
        tokenizer.decode([5, 6], skip_special_tokens=True)
    ]


def test_building_the_engine_leaves_the_global_generators_alone(monkeypatch, micro_llama, hf):
    torch.manual_seed(123)
    random.seed(123)
    expected = (torch.rand(1).item(), random.random())
    torch.manual_seed(123)
    random.seed(123)
    build(monkeypatch, "0.11.0", micro_llama, hf[1])  # the stand-in re-seeds them, as vLLM does
    assert (torch.rand(1).item(), random.random()) == expected


@pytest.mark.parametrize("version, problem", [
    ("0.6.3", False),
    ("0.8.5", False),
    ("0.11.1.dev3+gabc", False),
    ("0.33.0", False),
    ("0.6.2", True),
    ("0.5.4", True),
    ("0.34.0", True),
    ("1.0.0", True),
])
def test_supported_range(version, problem):
    found = version_problem(version)
    assert (found is not None) == problem
    if problem:
        assert version in found and "vllm>=0.6.3,<0.34" in found


def test_an_unsupported_release_is_refused_before_building_an_engine(monkeypatch, micro_llama, hf):
    loaded = install(monkeypatch, "0.34.0")
    with pytest.raises(RuntimeError, match=r"vLLM 0\.34\.0 is installed"):
        VLLMProbe(str(micro_llama), hf[1], torch.float32)
    assert not loaded


def test_parse_version():
    assert parse_version("0.11.1.dev3+gabc") == (0, 11, 1)
    assert parse_version("0.6.3.post1") == (0, 6, 3)
    assert parse_version("0.8.5rc1") == (0, 8, 5)


def test_engine_length_holds_the_longest_text_and_the_generation(hf):
    tokenizer = hf[1]
    texts = ["Fact: Kalo", "Fact: Kalo Mirve lives in Fengal Vale and Fengal Vale is"]
    longest = max(len(tokenizer(t)["input_ids"]) for t in texts)
    length = engine_length(tokenizer, texts, 20)
    assert length % KV_BLOCK == 0 and longest + 20 <= length < longest + 20 + KV_BLOCK
    assert engine_length(tokenizer, texts, 20, limit=24) == 24


def test_a_prompt_longer_than_the_engine_is_refused_by_name(monkeypatch, micro_llama, hf):
    probe, _ = build(monkeypatch, "0.33.0", micro_llama, hf[1], max_model_len=16)
    with pytest.raises(ValueError, match="max_model_len 16"):
        probe.score(
            [ScoringPair("Fact: Kalo Mirve lives in Fengal Vale and Fengal Vale is", "Fengal")]
        )


def test_run_texts_cover_every_prompt_the_run_scores():
    from editbench.harness.evaluation.capability import CapabilitySet
    from editbench.harness.running.runner import run_texts

    class Task:
        def generation_prompt(self, prompt):
            return f"Q: {prompt} A:"

    record = EditRecord("0", "P", "s", "new", "a much longer true answer", ("para",),
                        (Neighbour("N", "n"),), {"generation_prompts": ["G1", "G2"], "other": 3})
    shots = CapabilitySet("set", "shot text\n\n", [("question", ["a", "bbb"], 0)])
    texts = set(run_texts(Task(), [record], [shots]))
    for prompt in ("P", "para", "N"):
        assert f"{prompt} a much longer true answer" in texts
        assert f"Q: {prompt} A: a much longer true answer" in texts
    assert {"G1", "G2", "shot text\n\nquestion bbb"} <= texts


@pytest.mark.parametrize("version", VERSIONS)
def test_parity_report_passes_on_every_release(monkeypatch, micro_llama, version):
    install(monkeypatch, version)
    report = vllm_parity(micro_llama, torch.device("cpu"))
    assert report.problems(tolerance=1e-4, agreement=1.0) == [], report.lines()
    assert report.shared_prefix_tokens > 2 * KV_BLOCK
    assert [p.name[0] for p in report.phases] == ["a", "b", "c"]
    assert report.edit_moved_engine > 1e-2


def test_parity_report_catches_a_stale_prefix_cache(monkeypatch, micro_llama):
    """An engine with prefix caching on and no reset after the sync generates from stale keys and
    values: the report must say so."""
    loaded = install(monkeypatch, "0.11.0")
    import vllm

    real_init = vllm.LLM.__init__

    def caching_on(self, *args, **kwargs):
        real_init(self, *args, **{**kwargs, "enable_prefix_caching": True})

    monkeypatch.setattr(vllm.LLM, "__init__", caching_on)
    monkeypatch.setattr(vllm.LLM, "reset_prefix_cache", lambda self, *a, **k: True)
    report = vllm_parity(micro_llama, torch.device("cpu"))
    problems = report.problems(tolerance=1e-4, agreement=1.0)
    assert any(line.startswith("b.") and "generate" in line for line in problems), report.lines()
    assert loaded


def test_parity_report_catches_a_sync_that_never_arrives(monkeypatch, micro_llama):
    from editbench.core import probe_vllm

    install(monkeypatch, "0.33.0")
    monkeypatch.setattr(probe_vllm.VLLMProbe, "sync", lambda self, model, names: None)
    problems = vllm_parity(micro_llama, torch.device("cpu")).problems()
    assert any("never reached" in line for line in problems)
    assert any(line.startswith("b.") and "log-probabilities differ" in line for line in problems)


def test_parity_pairs_share_more_than_two_blocks(hf):
    pairs, prefix = parity_pairs(hf[1])
    assert prefix > 2 * KV_BLOCK and len({p.prompt for p in pairs}) > 1


def test_the_vllm_extra_asks_for_the_supported_range():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; editbench supports 3.10

    from editbench.core.probe_vllm import SUPPORTED_SPEC

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["optional-dependencies"]["vllm"] == [SUPPORTED_SPEC]


@pytest.mark.slow
def test_a_run_scored_by_the_engine_equals_one_scored_by_hf(monkeypatch, tmp_path, micro_llama):
    """Two methods in one run through the runner: the engine is sized by the run, receives each
    checkpoint's edits, and gets the first method's tensors back before the second starts."""
    from editbench.core.store import load_results
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec
    from editbench.harness.running.runner import Runner

    def run(out, backend):
        spec = RunSpec(task="pocket", model=str(micro_llama), edits=8, batch_size=4, out=out,
                       params={"pocket": {"n_entities": "20"}}, device="cpu",
                       cache_dir=tmp_path / "cache", methods=("ft-m", "ft-l"))
        runner = Runner(resolve(spec))
        runner.backend = backend  # the resolver asks for CUDA; the stand-in engine runs on CPU
        runner.run()
        scores = load_results(out).scores()
        return scores.sort_values(list(scores.columns[:-1])).reset_index(drop=True)

    loaded = install(monkeypatch, "0.33.0")
    engine = run(tmp_path / "vllm", "vllm")
    reference = run(tmp_path / "hf", "hf")
    assert len(loaded) == 1 and loaded[0].kwargs["max_model_len"] % KV_BLOCK == 0
    assert loaded[0].kwargs["enable_prefix_caching"] is False
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(engine, reference, check_exact=False, atol=1e-4)


def test_the_runner_names_an_unsupported_release(monkeypatch, caplog):
    from editbench.core import probe_vllm
    from editbench.harness.plan.resolve import choose_backend

    monkeypatch.setattr(probe_vllm, "installed_vllm_version", lambda: "0.34.1")
    on_gpu = torch.device("cuda")
    with caplog.at_level("WARNING"):
        assert choose_backend("auto", on_gpu) == "hf"
    assert "vLLM 0.34.1 is installed" in caplog.text
    with pytest.raises(ValueError, match=r"vLLM 0\.34\.1 is installed.*vllm>=0\.6\.3,<0\.34"):
        choose_backend("vllm", on_gpu)
