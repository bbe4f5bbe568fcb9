"""A site trains with real Opacus DP-SGD, keeps its budget, and survives restarts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fedcare.client.app import app
from fedcare.config import RunConfig
from fedcare.privacy.accounting import poisson_sample_rate
from fedcare.privacy.dp_sgd import DpSgdSettings, GradSampleMode, train_dp_sgd
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import ModelName, get_task
from tests.flower_harness import site_context, train_message

ROOT = Path(__file__).resolve().parents[2]
DP = RunConfig(dp=True, noise_multiplier=1.0, rounds=3)


def test_reprivatising_the_same_model_leaves_no_hooks(site_paths: dict[str, Path]) -> None:
    task = get_task("heart-disease")
    data = task.load_site("switzerland", site_paths["switzerland"])
    model = task.build_model(ModelName.MLP, seed=0)
    settings = DpSgdSettings(1.0, 1.0, poisson_sample_rate(data.n_train, 8), 1, 0.05)
    for _ in range(5):  # "Trying to add hooks twice" would raise on the second call
        before = [p.detach().clone() for p in model.parameters()]
        result = train_dp_sgd(model, task.loss(), data.x_train, data.y_train, settings)
        assert result.steps == 4
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())


def test_noise_is_not_reproducible_from_run_seeds(site_paths: dict[str, Path]) -> None:
    """Unseeded on purpose (the noise must not follow the run seed). False failure: both
    rounds' Poisson and noise generators get equal 63-bit OS-entropy seeds, p = 2**-126."""
    task = get_task("heart-disease")
    data = task.load_site("va", site_paths["va"])
    settings = DpSgdSettings(1.0, 1.0, poisson_sample_rate(data.n_train, 8), 1, 0.05)
    weights = []
    for _ in range(2):
        model = task.build_model(ModelName.LOGREG, seed=0)
        train_dp_sgd(model, task.loss(), data.x_train, data.y_train, settings)
        weights.append(model.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1])


def test_exhausted_budget_refuses_and_sends_no_weights(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    context = site_context("va", site_paths["va"], tmp_path, **{"max-epsilon": 0.05})
    reply = app(train_message(DP, 1), context)
    assert reply.has_error()
    assert reply.error.reason == "privacy-budget-exhausted"
    assert PrivacyLedger(tmp_path).read() == ()


def test_budget_is_checked_against_the_whole_ledger(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    context = site_context("cleveland", site_paths["cleveland"], tmp_path, **{"max-epsilon": 1.0})
    config = RunConfig(dp=True, noise_multiplier=2.0, rounds=20)
    outcomes = [app(train_message(config, r), context) for r in range(1, 21)]
    trained = [r for r in outcomes if not r.has_error()]
    assert 0 < len(trained) < 20
    assert all(r.has_error() for r in outcomes[len(trained) :])  # once refused, always refused
    assert max(float(r.content["metrics"]["epsilon"]) for r in trained) <= 1.0
    assert len(PrivacyLedger(tmp_path).read()) == len(trained)


def test_site_requiring_dp_refuses_a_non_private_round(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    reply = app(
        train_message(RunConfig(rounds=1), 1), site_context("va", site_paths["va"], tmp_path)
    )
    assert reply.has_error() and reply.error.reason == "dp-required"


def test_non_private_round_is_recorded_as_infinite_spending(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    context = site_context("va", site_paths["va"], tmp_path, **{"require-dp": "false"})
    assert not app(train_message(RunConfig(rounds=1), 1), context).has_error()
    reply = app(train_message(DP, 2), context)
    assert reply.has_error() and reply.error.reason == "privacy-budget-exhausted"


RESTART_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fedcare.client.app import app
    from fedcare.config import RunConfig
    from tests.flower_harness import site_context, train_message
    data, state, server_round = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    config = RunConfig(dp=True, noise_multiplier=1.0, rounds=3)
    reply = app(train_message(config, server_round), site_context("va", data, state))
    print("ERROR" if reply.has_error() else reply.content["metrics"]["epsilon"])
    """
)


def test_restarted_site_continues_epsilon_from_its_ledger(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    def one_round_in_a_new_process(server_round: int) -> float:
        args = [str(site_paths["va"]), str(tmp_path), str(server_round)]
        result = subprocess.run(
            [sys.executable, "-c", RESTART_SCRIPT, *args],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        return float(result.stdout.strip().splitlines()[-1])

    first = one_round_in_a_new_process(1)
    second = one_round_in_a_new_process(2)
    assert second > first * 1.2  # continued from the ledger, not reset
    assert [e.round for e in PrivacyLedger(tmp_path).read()] == [1, 2]


def test_torn_ledger_stops_training_with_a_clear_error(
    tmp_path: Path, site_paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    context = site_context("va", site_paths["va"], tmp_path)
    assert not app(train_message(DP, 1), context).has_error()
    ledger = PrivacyLedger(tmp_path)
    torn = ledger.path.read_bytes()[:-10]
    ledger.path.write_bytes(torn)
    reply = app(train_message(DP, 2), context)
    # The coordinator learns only the category; the site's own log has the full reason.
    assert reply.has_error() and reply.error.reason == "ledger-refused"
    assert "privacy ledger refused: its last line is incomplete" in caplog.text
    assert ledger.path.read_bytes() == torn  # nothing trained, nothing appended


def test_site_delta_policy_is_used_and_default_is_below_one_over_2n(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    strict = site_context("va", site_paths["va"], tmp_path / "strict", **{"delta": 1e-7})
    default = site_context("va", site_paths["va"], tmp_path / "default")
    assert not app(train_message(DP, 1), strict).has_error()
    assert not app(train_message(DP, 1), default).has_error()
    assert PrivacyLedger(tmp_path / "strict").read()[0].delta == 1e-7
    assert PrivacyLedger(tmp_path / "default").read()[0].delta == min(1e-5, 1 / (2 * 85))


def test_simulated_site_policies_take_budgets_and_delta() -> None:
    from fedcare.simulations.scenarios import get_scenario
    from fedcare.simulations.simulation import site_policies

    policies = site_policies(DP, get_scenario("heart-disease"), {"va": 0.5}, delta=1e-6)
    assert policies["va"].max_epsilon == 0.5 and policies["cleveland"].max_epsilon == 10.0
    assert all(p.delta == 1e-6 and p.require_dp for p in policies.values())
    with pytest.raises(Exception, match="unknown site"):
        site_policies(DP, get_scenario("heart-disease"), {"mars": 1.0})


@pytest.mark.parametrize("mode", list(GradSampleMode))
def test_empty_poisson_batches_still_take_a_noisy_step(
    mode: GradSampleMode, site_paths: dict[str, Path]
) -> None:
    """At rate 1/30 on 30 rows about a third of 30 batches are empty (none empty: p ~ 1e-6)."""
    task = get_task("heart-disease")
    data = task.load_site("switzerland", site_paths["switzerland"])
    model = task.build_model(ModelName.MLP, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_dp_sgd(
        model,
        task.loss(),
        data.x_train,
        data.y_train,
        DpSgdSettings(1.0, 1.0, 1 / 30, 1, 0.05, mode),
    )
    assert result.steps == 30
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
