"""``python -m fedcare.tasks.ncctg_lung``: the sites and the baselines' scores, as tables.

Trains every baseline from scratch (a few seconds on one CPU thread) and prints each site's
C-index and integrated Brier score for local-only, pooled and Cox, per model variant.
"""

from __future__ import annotations

import argparse

from fedcare.tasks.names import ModelName
from fedcare.tasks.ncctg_lung.baselines import run_baselines
from fedcare.tasks.ncctg_lung.data import site_groups, site_rows
from fedcare.tasks.ncctg_lung.report import scores_table, sites_table
from fedcare.tasks.ncctg_lung.training import TrainConfig


def main(argv: list[str] | None = None) -> None:
    """Print the site table, then one score table per requested model."""
    parser = argparse.ArgumentParser(prog="python -m fedcare.tasks.ncctg_lung")
    parser.add_argument(
        "--model", choices=[m.value for m in ModelName], action="append",
        help="model variant (repeatable; default: every variant)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    args = parser.parse_args(argv)
    models = [ModelName(m) for m in args.model] if args.model else list(ModelName)
    rows = site_rows()
    print("NCCTG lung cancer (lifelines.datasets.load_lung), sites by institution:")
    print(sites_table(site_groups(), rows))
    for model in models:
        print()
        print(scores_table(run_baselines(TrainConfig(model=model, seed=args.seed), rows)))


if __name__ == "__main__":
    main()
