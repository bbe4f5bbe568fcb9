"""Run configuration: TOML + CLI overrides, validated with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.config import RunConfig, StrategyName, load_config
from fedcare.errors import ConfigError, ExitCode


def test_defaults_are_valid_and_round_trip_through_flower_run_config() -> None:
    config = RunConfig()
    assert RunConfig.from_run_config(config.to_run_config()) == config


def test_toml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[run]\nrounds = 7\nstrategy = "fedprox"\nlearning-rate = 1\n')
    config = load_config(path).replace(rounds=3, seed=None)
    assert (config.rounds, config.strategy, config.learning_rate) == (3, StrategyName.FEDPROX, 1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('strategy = "fedsgd"', "strategy: unknown value 'fedsgd'; choose one of: fedavg"),
        ("rounds = 0", "rounds: 0 must be an integer from 1"),
        ('rounds = "ten"', "rounds = 'ten' must be int"),
        ("learning-rate = -0.1", "learning-rate: -0.1 must be a number > 0"),
        ("roundz = 3", "unknown key(s) roundz"),
        ('model = "resnet"', "model: unknown value 'resnet'"),
        ("rounds = [", "not valid TOML"),
    ],
)
def test_invalid_values_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_override_is_validated() -> None:
    with pytest.raises(ConfigError, match="unknown value 'fedsgd'"):
        RunConfig().replace(strategy="fedsgd")


def test_dp_refuses_row_count_weighting() -> None:
    """Under DP every number a site sends is noised and on its ledger; a bucketed row count is
    neither, so a DP run weighs every site 1."""
    with pytest.raises(ConfigError, match="weighting: dp weighs every site 1"):
        RunConfig(dp=True, target_epsilon=1.0, weighting="examples")  # type: ignore[arg-type]
