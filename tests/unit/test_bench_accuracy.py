"""``fedcare bench accuracy``: aggregation over seeds, the issue #13 goals on made-up per-run
figures (a missed goal prints NOT MET), the runner on a stand-in simulation, and one small real
run through the CLI whose table, JSON and plot agree with the runs' own summary.json."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedcare.config import RunConfig, StrategyName
from fedcare.errors import ConfigError, FedcareError
from fedcare.simulations.benchmarks.accuracy import (
    DEFAULT,
    DP,
    DP_SITE_STATISTICS,
    SITE_STATISTICS,
    ConfigurationResult,
    RunFigures,
    Spread,
    configurations,
    evaluate_goals,
    run_accuracy_benchmark,
    site_rows,
    summary_rows,
)

SITES = ("cleveland", "hungarian", "switzerland", "va")


def figures(
    seed: int,
    mean: float,
    best_local: float = 0.70,
    personalized: tuple[float, ...] = (0.80, 0.80, 0.80, 0.80),
    local_own: tuple[float, ...] = (0.70, 0.70, 0.70, 0.70),
    site_accuracy: tuple[float, ...] = (0.75, 0.75, 0.75, 0.75),
    max_epsilon: float | None = None,
) -> RunFigures:
    """One made-up run; the local-only models' means over all test sets peak at ``best_local``
    (hungarian's model)."""
    return RunFigures(
        seed=seed,
        mean_accuracy=mean,
        site_accuracy=dict(zip(SITES, site_accuracy, strict=True)),
        personalized=dict(zip(SITES, personalized, strict=True)),
        local_own=dict(zip(SITES, local_own, strict=True)),
        local_mean=dict(zip(SITES, (best_local - 0.05, best_local, 0.6, 0.6), strict=True)),
        pooled_mean=0.71,
        max_epsilon=max_epsilon,
    )


def result(name: str, runs: list[RunFigures], **kwargs: Any) -> ConfigurationResult:
    configuration = next(c for c in configurations(names=[name]) if c.name == name)
    return ConfigurationResult(configuration, tuple(runs), **kwargs)


def goal(results: list[ConfigurationResult], key: str) -> Any:
    return next(g for g in evaluate_goals(results) if g.key == key)


# --- aggregation ---------------------------------------------------------------------------


def test_spread_is_mean_sample_sd_and_range() -> None:
    values = [0.70, 0.74, 0.72, 0.76, 0.73]

    spread = Spread.of(values)

    assert spread.mean == pytest.approx(0.73)
    assert spread.sd == pytest.approx(statistics.stdev(values))
    assert (spread.low, spread.high, spread.n) == (0.70, 0.76, 5)
    assert Spread.of([0.7]).sd is None


def test_rows_aggregate_each_configuration_and_derive_the_baselines() -> None:
    default = result(DEFAULT, [figures(42, 0.74, best_local=0.70), figures(43, 0.76, 0.73)])
    dp = result(DP, [figures(42, 0.70, personalized=(0.7, 0.7, 0.7, 0.7)), figures(43, 0.72)])

    rows = {row.label.split(" (")[0]: row for row in summary_rows([default, dp])}

    assert rows["default"].values == (0.74, 0.76) and rows["default"].seeds == (42, 43)
    assert rows["default"].flamby == {
        StrategyName.FEDAVG: "FedAvg", StrategyName.FEDPROX: "FedProx",
        StrategyName.FEDADAM: "FedAdam", StrategyName.FEDYOGI: "FedYogi",
    }.get(RunConfig().strategy)  # fmt: skip
    assert rows["best local"].values == (0.70, 0.73)  # each seed's own best local model
    assert rows["best local"].flamby_value == 0.722
    assert rows["pooled"].flamby_value == 0.735
    assert rows["personalized"].values == (0.80, 0.80)
    assert rows["DP personalized"].values == (0.70, 0.80)
    assert rows["DP ε≤1"].flamby is None and rows["personalized"].flamby is None
    assert rows["Scaffold"].values == () and "not in fedcare" in rows["Scaffold"].note
    spread = rows["default"].spread
    assert spread is not None and spread.mean == pytest.approx(0.75)


def test_site_rows_are_means_over_seeds_on_own_test_sets() -> None:
    runs = [
        figures(42, 0.7, personalized=(0.9, 0.8, 0.7, 0.6), local_own=(0.5, 0.5, 0.5, 0.5)),
        figures(43, 0.7, personalized=(0.7, 0.8, 0.9, 1.0), local_own=(0.7, 0.7, 0.7, 0.7)),
    ]

    rows = {row.site: row for row in site_rows(runs)}

    assert rows["cleveland"].personalized == pytest.approx(0.8)
    assert rows["va"].personalized == pytest.approx(0.8)
    assert rows["va"].local == pytest.approx(0.6)
    assert rows["va"].global_ == pytest.approx(0.75)
    assert rows["va"].dp_global is None


# --- goals ---------------------------------------------------------------------------------


def test_goal_a_met_when_mean_reaches_it_and_every_seed_beats_its_best_local() -> None:
    runs = [figures(s, 0.75, best_local=0.72) for s in (42, 43, 44, 45, 46)]

    verdict = goal([result(DEFAULT, runs)], "a")

    assert verdict.met and verdict.line().count("NOT MET") == 0 and ": MET" in verdict.line()


def test_goal_a_compares_best_local_per_seed_not_on_average() -> None:
    # The federated mean (0.76) is above the mean of the best local models (0.716), but at
    # seed 44 that seed's best local model (0.78) beats that seed's federated run (0.75).
    means = {42: 0.77, 43: 0.77, 44: 0.75, 45: 0.76, 46: 0.75}
    best = {42: 0.70, 43: 0.70, 44: 0.78, 45: 0.70, 46: 0.70}
    runs = [figures(s, means[s], best_local=best[s]) for s in means]

    verdict = goal([result(DEFAULT, runs)], "a")

    assert statistics.fmean(means.values()) > statistics.fmean(best.values())
    assert not verdict.met
    assert "NOT MET" in verdict.line() and "44: 0.750 vs hungarian 0.780" in verdict.measured


def test_goal_a_not_met_below_the_mean() -> None:
    runs = [figures(s, 0.74, best_local=0.60) for s in (42, 43, 44, 45, 46)]

    verdict = goal([result(DEFAULT, runs)], "a")

    assert not verdict.met and "NOT MET" in verdict.line() and "mean 0.740" in verdict.measured


def test_goal_b_not_met_when_one_site_is_below_its_local_model() -> None:
    below = figures(42, 0.75, personalized=(0.9, 0.9, 0.9, 0.69), local_own=(0.7,) * 4)

    verdict = goal([result(DEFAULT, [below])], "b")

    assert not verdict.met and "NOT MET" in verdict.line()
    assert "va 0.690 < local 0.700" in verdict.measured


def test_goal_b_not_met_below_its_mean_and_met_above() -> None:
    low = figures(42, 0.75, personalized=(0.77,) * 4, local_own=(0.7,) * 4)
    high = figures(42, 0.75, personalized=(0.79,) * 4, local_own=(0.7,) * 4)

    missed, met = goal([result(DEFAULT, [low])], "b"), goal([result(DEFAULT, [high])], "b")

    assert not missed.met and "NOT MET" in missed.line() and "0.770" in missed.measured
    assert met.met and "NOT MET" not in met.line()


def test_goal_c_needs_the_mean_and_every_site_within_epsilon_one() -> None:
    good = [figures(s, 0.73, max_epsilon=0.99) for s in (42, 43)]
    over = [figures(s, 0.73, max_epsilon=1.2) for s in (42, 43)]
    weak = [figures(s, 0.71, max_epsilon=0.99) for s in (42, 43)]

    verdicts = [goal([result(DP, runs)], "c") for runs in (good, over, weak)]

    assert [v.met for v in verdicts] == [True, False, False]
    assert all("NOT MET" in v.line() for v in verdicts[1:])
    assert "over the target" in verdicts[1].measured and "personalized" in verdicts[0].measured


def test_goals_without_runs_are_not_met_never_left_out() -> None:
    failed = result(DEFAULT, [figures(42, 0.8)], failures=((43, "ray died"),))

    verdicts = evaluate_goals([failed])

    assert [g.key for g in verdicts] == ["a", "b", "c"]
    assert not any(g.met for g in verdicts)
    assert "failed at seed 43 (ray died)" in verdicts[0].measured
    assert "'dp' not run" in verdicts[2].measured


# --- configurations and the runner -----------------------------------------------------------


def test_configurations_are_the_defaults_with_one_change_each() -> None:
    chosen = {c.name: c for c in configurations()}

    assert chosen[DEFAULT].config == RunConfig()
    assert set(chosen) == {
        DEFAULT, DP, SITE_STATISTICS, DP_SITE_STATISTICS, *(str(s) for s in StrategyName)
    }  # fmt: skip
    for strategy in StrategyName:
        config = chosen[str(strategy)].config
        assert config == RunConfig().replace(strategy=strategy)
        assert chosen[str(strategy)].same_as == (DEFAULT if config == RunConfig() else None)
    dp = chosen[DP].config
    assert dp is not None and (dp.dp, dp.target_epsilon) == (True, 1.0)
    assert dp.replace(dp=False, target_epsilon=0.0) == RunConfig()
    site_statistics = chosen[SITE_STATISTICS].config
    assert site_statistics == RunConfig().replace(preprocessing="site")
    dp_site_statistics = chosen[DP_SITE_STATISTICS].config
    assert dp_site_statistics == dp.replace(preprocessing="site")


def test_a_configuration_run_config_refuses_is_kept_with_the_reason() -> None:
    chosen = configurations(RunConfig(strategy=StrategyName.FEDPROX), [DP])

    assert chosen[0].config is None and "fedprox is not available with dp" in str(chosen[0].refused)
    with pytest.raises(ConfigError, match="choose from default"):
        configurations(names=["fedsgd"])


def _summary(config: RunConfig, seed: int) -> dict[str, Any]:
    """A summary.json as fedcare simulate lays it out, figures made from the seed."""
    base = 0.70 + (seed - 42) / 100
    sites = {
        s: {"accuracy": base, "auroc": 0.8, "personalized": {"accuracy": base + 0.1, "auroc": 0.8}}
        for s in SITES
    }
    local = {
        s: {"mean_accuracy": 0.6, "sites": {t: {"accuracy": 0.65} for t in SITES}} for s in SITES
    }
    privacy = {"sites": {s: {"epsilon": 0.9} for s in SITES}} if config.dp else None
    return {
        "seed": seed, "mean_accuracy": base, "sites": sites, "privacy": privacy,
        "baselines": {"local": local, "pooled": {"mean_accuracy": 0.68}},
    }  # fmt: skip


def test_runner_runs_each_distinct_configuration_and_records_failures(tmp_path: Path) -> None:
    calls: list[tuple[str, int, Path]] = []
    lines: list[str] = []

    def simulate(config: RunConfig, out_dir: Path) -> Mapping[str, Any]:
        calls.append((str(config.strategy) + ("+dp" if config.dp else ""), config.seed, out_dir))
        if config.dp and config.seed == 43:
            raise FedcareError("site va refused: budget")
        return _summary(config, config.seed)

    twin = str(RunConfig().strategy)
    chosen = configurations(names=[DEFAULT, twin, DP])
    report = run_accuracy_benchmark(chosen, (42, 43), tmp_path, lines.append, simulate)

    assert len(calls) == 4  # the default's twin strategy reuses its runs
    assert calls[0][2] == tmp_path / "runs" / DEFAULT / "seed-42"
    by_name = {r.name: r for r in report.results}
    assert by_name[twin].runs == by_name[DEFAULT].runs
    assert by_name[DP].failures == ((43, "site va refused: budget"),)
    assert [r.seed for r in by_name[DP].runs] == [42]
    assert any("FAILED" in line for line in lines) and any("[4/4]" in line for line in lines)
    dp_goal = next(g for g in report.goals if g.key == "c")
    assert not dp_goal.met and "failed at seed 43" in dp_goal.measured
    assert not report.full_protocol
    document = report.to_json()
    assert document["configurations"][0]["runs"][0]["run_dir"].endswith("seed-42")
    json.dumps(document, allow_nan=False)  # accuracy.json is plain JSON


# --- one real run through the CLI ------------------------------------------------------------


@pytest.mark.slow
def test_cli_small_real_run_table_json_and_plot_agree(tmp_path: Path) -> None:
    # Prepare: one seed, three rounds, the default configuration and the strategy it runs (the
    # same RunConfig: its runs are reused), so one simulation (~35 s; DP's reading is covered
    # by the runner test above on summary.json's documented layout).
    twin = str(RunConfig().strategy)
    chosen = f"default,{twin}"
    args = ["--seeds", "42", "--configurations", chosen, "--rounds", "3", "--out", "out"]

    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "fedcare", "bench", "accuracy", *args],
        cwd=tmp_path, env=os.environ | {"COLUMNS": "200"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip

    # Assert: the figures are the run's own summary.json figures, in the JSON and the table.
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    document = json.loads((out / "accuracy.json").read_text())
    assert document["seeds"] == [42] and document["full_protocol"] is False
    assert document["settings"]["overrides"] == {"rounds": 3}
    runs = {c["name"]: c["runs"] for c in document["configurations"]}
    assert runs[twin] == runs[DEFAULT] and not (out / "runs" / twin).exists()
    summary = json.loads((out / "runs" / DEFAULT / "seed-42" / "summary.json").read_text())
    assert (summary["rounds"], summary["seed"]) == (3, 42)
    assert runs[DEFAULT][0]["mean_accuracy"] == summary["mean_accuracy"]
    assert 0.45 <= summary["mean_accuracy"] <= 0.95  # a learner, not a broken one
    rows = {row["label"].split(" (")[0]: row for row in document["rows"]}
    assert rows["default"]["per_seed"] == {"42": summary["mean_accuracy"]}
    assert rows["personalized"]["per_seed"]["42"] == pytest.approx(
        summary["personalized_mean_accuracy"]
    )
    local = summary["baselines"]["local"]
    assert rows["best local"]["per_seed"]["42"] == max(m["mean_accuracy"] for m in local.values())
    assert rows["pooled"]["per_seed"]["42"] == summary["baselines"]["pooled"]["mean_accuracy"]
    per_site = {s["site"]: s for s in document["per_site"]}
    assert set(per_site) == set(SITES)
    for name, site in per_site.items():  # every site: at one round some coincide by chance
        assert site["personalized"] == summary["sites"][name]["personalized"]["accuracy"]
        assert site["local"] == local[name]["sites"][name]["accuracy"]
        assert site["global"] == summary["sites"][name]["accuracy"]
    site = per_site["va"]
    lines = done.stdout.splitlines()
    default_line = next(line for line in lines if "default (" in line)
    assert f"{summary['mean_accuracy']:.3f}" in default_line
    va_line = next(line for line in lines if line.startswith("│ va "))
    assert f"{site['personalized']:.3f}" in va_line and f"{site['local']:.3f}" in va_line
    assert any("[1/1] default, seed 42: mean accuracy" in line for line in lines)
    for g in document["goals"]:
        line = next(line for line in lines if line.startswith(f"({g['key']})"))
        assert f": {g['verdict']} - " in line
    assert "reduced run" in done.stdout
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
