"""``fedcare site personalize``: adapt a signed release to this site's own data, offline.

Registered on the ``site`` group by :mod:`fedcare.cli.site`; its own module keeps that one
within the size limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fedcare.cli.common import (
    BundleOption,
    ReleaseKeyOption,
    console,
    err_console,
    quiet_environment,
    run_or_exit,
)

if TYPE_CHECKING:
    from fedcare.client.personalize import SitePersonalization


def site_personalize(
    bundle: BundleOption,
    key: ReleaseKeyOption,
    data: Annotated[
        Path,
        typer.Option("--data", help="This site's CSV or Parquet file.", resolve_path=True),
    ],
    state: Annotated[
        Path,
        typer.Option(
            "--state",
            help="The site's state folder (ledger, audit log); the model is saved here.",
            resolve_path=True,
        ),
    ],
    name: Annotated[str, typer.Option(help="This site's name (for messages).")] = "site",
    dp: Annotated[
        bool | None,
        typer.Option(
            "--dp/--no-dp",
            help="Train with DP-SGD on this site's ledger (default: DP unless --allow-non-dp).",
        ),
    ] = None,
    noise_multiplier: Annotated[float, typer.Option(help="DP-SGD noise multiplier.")] = 1.0,
    max_grad_norm: Annotated[float, typer.Option(help="DP-SGD clipping bound.")] = 1.0,
    max_epsilon: Annotated[float, typer.Option(help="This site's privacy budget.")] = 10.0,
    delta: Annotated[float | None, typer.Option(help="δ (default min(1e-5, 1/(2n))).")] = None,
    allow_non_dp: Annotated[
        bool, typer.Option(help="This site's policy allows training without DP.")
    ] = False,
    learning_rate: Annotated[float, typer.Option(help="Base learning rate of the grid.")] = 0.02,
    batch_size: Annotated[int, typer.Option(help="Batch size (DP: expected batch).")] = 8,
    local_epochs: Annotated[
        int, typer.Option(help="Epochs of the local-only model (trained without DP only).")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the validation split and training.")] = 0,
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(help="An extra column of the export that is never read (repeatable)."),
    ] = None,
) -> None:
    """Adapt a signed release to this site's own training rows and compare it on its own test
    rows: local-only, global and personalized. Offline: nothing is sent.

    The setting (keep global, fine-tune, or the site's own model) is chosen on a
    validation part of the training rows only. Under DP every training is DP-SGD spent on this
    site's ledger and budget. The personalized model stays here, in STATE/personalized/.
    """
    quiet_environment()
    from fedcare.bundle import load_bundle
    from fedcare.client.personalize import PersonalizeOptions, personalize_site
    from fedcare.client.policy import SitePolicy

    def run() -> SitePersonalization:
        import torch

        torch.set_num_threads(1)  # tiny models: threads cost more than they give
        policy = SitePolicy(
            max_epsilon=max_epsilon,
            delta=delta,
            require_dp=not allow_non_dp,
            ignore_columns=tuple(ignore_column or ()),
        )
        options = PersonalizeOptions(
            dp=policy.require_dp if dp is None else dp,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            learning_rate=learning_rate,
            batch_size=batch_size,
            local_epochs=local_epochs,
            seed=seed,
        )
        released = load_bundle(bundle, key)
        return personalize_site(released, name, data, state, policy, options)

    _print_personalization(run_or_exit(run))


def _print_personalization(done: SitePersonalization) -> None:
    """The site's own comparison, the chosen setting, ε spent and where the model is."""
    from rich import box

    from fedcare.cli.common import fmt
    from fedcare.client.personalize import LOCAL_ONLY_LEFT_OUT_DP

    table = Table(
        title=f"site {done.site}: {done.release} on its own {done.n_test} test rows",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in ("model", "accuracy", "AUROC"):
        table.add_column(header, justify="left" if header == "model" else "right")
    rows = (
        ("local-only", done.local_only),
        ("global", done.global_model),
        ("personalized", done.personalized),
    )
    for label, metrics in rows:
        if metrics is None:
            table.add_row(label, "-", "-")
        else:
            table.add_row(label, fmt(metrics.accuracy), fmt(metrics.auroc))
    console.print(table)
    if done.local_only is None:
        console.print(f"local-only: {LOCAL_ONLY_LEFT_OUT_DP}", highlight=False)
    result = done.result
    chosen = result.chosen
    setting = str(chosen.method)
    if chosen.epochs:
        setting += f", {chosen.epochs} epochs, learning rate {chosen.learning_rate:g}"
    if chosen.lam:
        setting += f", lambda {chosen.lam:g}"
    chosen_on, global_on = result.chosen_validation, result.global_validation
    console.print(
        f"chosen: {setting} (on validation rows carved from the {done.n_train} training rows: "
        f"accuracy {fmt(chosen_on.accuracy)}, AUROC {fmt(chosen_on.auroc)}; global "
        f"{fmt(global_on.accuracy)}, {fmt(global_on.auroc)}"
        f"{'; then refit on all training rows' if result.refit else ''})",
        highlight=False,
    )
    spent = done.privacy
    if spent is None:
        console.print("privacy: trained without DP; nothing spent on the ledger", highlight=False)
    else:
        console.print(
            f"privacy: {len(spent.rounds)} DP-SGD training(s) on this site's ledger (run "
            f"{spent.run_id}); epsilon {spent.epsilon_before:.3f} -> {spent.epsilon_after:.3f} "
            f"(spent {spent.epsilon_after - spent.epsilon_before:.3f}) at delta "
            f"{spent.delta:.2g}, max-epsilon {spent.max_epsilon:g}",
            highlight=False,
        )
    if result.stopped:
        err_console.print(
            f"[bold yellow]stopped by the privacy budget[/] after {result.trainings} "
            "training(s): the best model so far was kept",
            highlight=False,
        )
    console.print(
        f"personalized model saved at {done.weights_file} (sha256 {done.weights_sha256}); "
        f"comparison in {done.record_file}; one entry added to the audit log",
        highlight=False,
        soft_wrap=True,
    )
    console.print("nothing was sent: the model and these figures stay at this site")
