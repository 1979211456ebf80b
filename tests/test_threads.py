"""One CPU thread for a model too small to gain from more, unless the user chose."""

import logging

import pytest
import torch

from editbench.harness.running import threads


@pytest.fixture
def calls(monkeypatch):
    made = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", made.append)
    monkeypatch.setattr(threads, "_explicit", False)
    return made


def test_a_small_model_on_the_cpu_gets_one_thread_and_says_so(calls, caplog):
    with caplog.at_level(logging.INFO, logger="editbench.harness.running.threads"):
        assert threads.fit_threads_to_model(torch.nn.Linear(100, 100), torch.device("cpu")) == 1
    assert calls == [1] and "torch threads: 1" in caplog.text and "--threads" in caplog.text


def test_a_large_model_keeps_its_threads(calls):
    large = torch.nn.Linear(5000, 5000, device="meta")  # 25M parameters, no memory
    assert threads.fit_threads_to_model(large, torch.device("cpu")) is None and calls == []
    assert (
        threads.fit_threads_to_model(torch.nn.Linear(4, 4), torch.device("cuda")) is None
        and calls == []
    )


def test_the_users_choice_wins(calls, monkeypatch):
    threads.mark_explicit(True)
    assert (
        threads.fit_threads_to_model(torch.nn.Linear(4, 4), torch.device("cpu")) is None
        and calls == []
    )
    monkeypatch.setattr(threads, "_explicit", None)  # the Python API: OMP_NUM_THREADS tells
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert (
        threads.fit_threads_to_model(torch.nn.Linear(4, 4), torch.device("cpu")) is None
        and calls == []
    )
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.fit_threads_to_model(torch.nn.Linear(4, 4), torch.device("cpu")) == 1


def test_the_cli_marks_threads_given_after_the_command_as_chosen(monkeypatch):
    from click.testing import CliRunner

    from editbench.harness.cli.group import main

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(threads, "_explicit", None)  # restored after the test
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert CliRunner().invoke(main, ["list", "--threads", "2"]).exit_code == 0
    assert threads.chosen_by_user()
    assert CliRunner().invoke(main, ["list"]).exit_code == 0
    assert not threads.chosen_by_user()
