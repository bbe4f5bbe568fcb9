"""Plain-text tables of the task's sites and of the baselines' scores, for a reader."""

from __future__ import annotations

from collections.abc import Mapping

from fedcare.tasks.ncctg_lung.baselines import BaselineReport, Method
from fedcare.tasks.ncctg_lung.data import SiteGroup, SurvivalRows, split_site


def sites_table(groups: tuple[SiteGroup, ...], rows: Mapping[str, SurvivalRows]) -> str:
    """One line per site: its institutions, patients, deaths, training and test patients."""
    lines = [
        f"{'site':<11} {'institutions':<14} {'patients':>8} {'deaths':>6} {'train':>5} {'test':>4}"
    ]
    for group in groups:
        site = rows[group.name]
        train, test = split_site(site)
        institutions = ",".join(str(i) for i in group.institutions)
        lines.append(
            f"{group.name:<11} {institutions:<14} {site.n:>8} {int(site.event.sum()):>6} "
            f"{train.n:>5} {test.n:>4}"
        )
    total = sum(r.n for r in rows.values())
    deaths = sum(int(r.event.sum()) for r in rows.values())
    lines.append(f"{'all':<11} {'':<14} {total:>8} {deaths:>6}")
    return "\n".join(lines)


def scores_table(report: BaselineReport) -> str:
    """Per site and mean: C-index and integrated Brier score of each method."""
    methods = tuple(Method)
    config = report.config
    header = (
        f"model {config.model} ({config.epochs} full-batch Adam steps, "
        f"lr {config.learning_rate:g}, weight decay {config.weight_decay:g}, "
        f"seed {config.seed}); Cox: lifelines CoxPHFitter"
    )
    names = " ".join(f"{m:>10}" for m in methods)
    lines = [
        header,
        f"{'':<11} {'':>4}  {'C-index (higher is better)':^32}  {'IBS (lower is better)':^32}",
        f"{'site':<11} {'test':>4}  {names}  {names}",
    ]
    rows = [(site, {m: report.scores[m][site] for m in methods}) for site in report.sites]
    rows.append(("mean", {m: report.mean(m) for m in methods}))
    for site, scores in rows:
        c_index = " ".join(f"{scores[m].c_index:>10.3f}" for m in methods)
        ibs = " ".join(f"{scores[m].ibs:>10.3f}" for m in methods)
        lines.append(f"{site:<11} {scores[Method.COX].n_test:>4}  {c_index}  {ibs}")
    return "\n".join(line.rstrip() for line in lines)
