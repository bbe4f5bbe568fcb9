"""The hospital's site daemon and its checks: ``fedcare site ...``.

``site personalize`` lives in :mod:`fedcare.cli.site_personalize`; it is registered here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
from fedcare.cli.site_personalize import site_personalize
from fedcare.messages import COUNT_BUCKET, VALIDATION_CELLS

site_app = typer.Typer(help="The hospital site: check data, run the daemon.", no_args_is_help=True)


@site_app.command("check")
def site_check(
    data: Annotated[
        Path, typer.Option("--data", help="The site's CSV or Parquet file.", resolve_path=True)
    ],
    task: Annotated[
        str, typer.Option(help="Task whose schema the file must follow.")
    ] = "heart-disease",
    name: Annotated[str, typer.Option(help="Site name (for messages).")] = "site",
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(
            help="An extra column of the export that is never read (repeatable); it is still "
            "checked for identifiers."
        ),
    ] = None,
) -> None:
    """Run the data gate (schema + de-identification guard) on a site file; nothing is sent."""
    from fedcare.client.policy import SitePolicy
    from fedcare.tasks import SiteData, get_task

    def check() -> SiteData:
        # Through the site policy, so a name `site start` would refuse is refused here too.
        policy = SitePolicy(ignore_columns=tuple(ignore_column or ()))
        return get_task(task).load_site(name, data, ignore_columns=policy.ignore_columns)

    loaded = run_or_exit(check)
    console.print(
        f"{data}: passes the {task} data gate; {loaded.n_train} training and {loaded.n_test} "
        f"test rows after preprocessing, {loaded.x_train.shape[1]} features"
    )


@site_app.command("validate")
def site_validate(
    bundle: BundleOption,
    key: ReleaseKeyOption,
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="This site's labelled CSV or Parquet file; every complete row is scored.",
            resolve_path=True,
        ),
    ],
    min_patients: Annotated[
        int, typer.Option(min=1, help="Smallest cell (subgroup) reported, in patients.")
    ] = 20,
    min_events: Annotated[
        int, typer.Option(min=2, help="Smallest cell reported, in events and in non-events.")
    ] = 5,
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(help="An extra column of the export that is never read (repeatable)."),
    ] = None,
) -> None:
    """Score a signed release on this site's own data and print its validation report.

    Offline: the bundle's signature is checked with the owner's key, the file goes through the
    data gate, and nothing is sent anywhere. The report is the one a site sends in a cross-site
    validation (same metrics, same subgroups, same suppression of small cells).
    """
    from fedcare.bundle import InvalidInput, load_bundle
    from fedcare.client.policy import SitePolicy
    from fedcare.errors import DataError
    from fedcare.tasks import get_task
    from fedcare.validation_report import suppressed_cells, validation_report

    def score() -> tuple[Any, dict[str, float], int]:
        released = load_bundle(bundle, key)
        task = get_task(released.task)
        policy = SitePolicy(ignore_columns=tuple(ignore_column or ()))
        rows = task.read_labelled(data, policy.ignore_columns)
        try:
            probability = released.predict_proba(rows.columns)
        except InvalidInput as exc:
            raise DataError(f"{data}: {exc}; the release refuses this file") from None
        groups = task.subgroups(rows.columns)
        return (
            released,
            validation_report(rows.labels, probability, groups, min_patients, min_events),
            rows.n,
        )

    released, report, n = run_or_exit(score)
    console.print(_validation_table(report, f"{released.name} {released.version} on {data.name}"))
    left_out = suppressed_cells(report, VALIDATION_CELLS)
    if left_out:
        console.print(
            f"not reported (fewer than {min_patients} patients, or {min_events} events or "
            f"non-events): {', '.join(left_out)}",
            highlight=False,
        )
    console.print(
        f"{n} complete rows scored at this site; counts rounded to {COUNT_BUCKET}; "
        "nothing was sent",
        highlight=False,
    )


def _validation_table(report: dict[str, float], title: str) -> Table:
    """One row per reported cell: the validation metrics a site sends, formatted."""
    from rich import box

    from fedcare import messages as keys

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = (
        ("AUROC", keys.AUROC), ("acc", keys.ACCURACY), ("sens", keys.SENSITIVITY),
        ("spec", keys.SPECIFICITY), ("Brier", keys.BRIER),
        ("cal int", keys.CALIBRATION_INTERCEPT), ("cal slope", keys.CALIBRATION_SLOPE),
        ("ECE", keys.ECE),
    )  # fmt: skip
    table.add_column("cell", no_wrap=True)
    table.add_column(columns[0][0], justify="right")
    table.add_column("95% CI", justify="right", no_wrap=True)
    for header, _ in columns[1:]:
        table.add_column(header, justify="right")
    table.add_column("patients", justify="right")
    table.add_column("events", justify="right")
    for cell in keys.VALIDATION_CELLS:
        if keys.validation_key(cell, keys.AUROC) not in report:
            continue  # suppressed
        value = {m: report[keys.validation_key(cell, m)] for m in keys.VALIDATION_METRICS}
        interval = f"{value[keys.AUROC_CI_LOW]:.2f}-{value[keys.AUROC_CI_HIGH]:.2f}"
        numbers = [f"{value[metric]:.2f}" for _, metric in columns]
        counts = [f"~{value[keys.PATIENTS]:.0f}", f"~{value[keys.EVENTS]:.0f}"]
        table.add_row(cell, numbers[0], interval, *numbers[1:], *counts)
    return table


site_app.command("personalize")(site_personalize)


@site_app.command("audit")
def site_audit(
    state: Annotated[
        Path, typer.Option("--state", help="The site's state folder.", resolve_path=True)
    ],
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain; exit 4 if broken.")
    ] = False,
) -> None:
    """Show what this site has sent (the audit log), and verify it has not been altered."""
    from fedcare.chained_log import ChainBrokenError
    from fedcare.client.audit import audit_log

    log = audit_log(state)
    try:
        entries = log.read()
    except ChainBrokenError as exc:
        err_console.print(f"[bold red]error:[/] {log.path}: audit log does not verify: {exc}")
        raise typer.Exit(code=4) from None
    if not verify:
        for entry in entries:
            arrays = ", ".join(f"{a['name']}{tuple(a['shape'])}" for a in entry.get("arrays", []))
            metrics = {k: v for m in entry.get("metrics", {}).values() for k, v in m.items()}
            sent = entry.get("error") or {"arrays": arrays, "metrics": metrics}
            if entry["kind"] == "ledger-reset":
                sent = f"ledger reset #{entry['resets']} (old ledger: {entry['old_ledger']})"
            if entry["kind"] == "personalization":
                release = entry["release"]
                sent = (
                    f"personalized {release['name']} {release['version']} here "
                    f"({entry['chosen']['method']}; {len(entry['ledger_events'])} ledger "
                    f"event(s); saved {entry['saved']['file']}); nothing sent"
                )
            if entry["kind"] == "refused-app":
                sent = f"refused unapproved app bundle {entry['fab_hash']} (nothing sent)"
            where = f"run {entry['run_id']} round {entry['round']} {entry['message_type']}"
            console.print(f"{entry['time']} {where}: {sent}")
    console.print(f"{log.path}: {len(entries)} entries, hash chain verified")


@site_app.command("keygen")
def site_keygen(
    state: Annotated[
        Path, typer.Option(help="State folder: the key pair is written here.", resolve_path=True)
    ],
    name: Annotated[str, typer.Option(help="This site's name (the key's comment).")] = "site",
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
) -> None:
    """Create this site's key pair here; only the public key (site.pub) goes to the owner."""
    from fedcare.privacy.pki import generate_site_key

    keys = run_or_exit(lambda: generate_site_key(state, name, force))
    console.print(keys.public_line, highlight=False, soft_wrap=True)
    console.print(
        f"private key {keys.private_key} (0600) stays here; send {keys.public_key} to the model "
        f"owner, who registers it with 'fedcare pki add-site {name} --public-key site.pub'",
        highlight=False,
    )


@site_app.command("start")
def site_start(
    name: Annotated[str, typer.Option(help="This site's name (as registered).")],
    data: Annotated[Path, typer.Option(help="The site's CSV or Parquet file.", resolve_path=True)],
    state: Annotated[
        Path, typer.Option(help="State folder: ledger, audit log, logs.", resolve_path=True)
    ],
    ca: Annotated[Path, typer.Option(help="The federation's ca.crt.", resolve_path=True)],
    coordinator: Annotated[str, typer.Option(help="Coordinator address HOST:PORT.")],
    key: Annotated[
        Path | None,
        typer.Option(
            help="This site's private key (default STATE/site.key, from site keygen).",
            resolve_path=True,
        ),
    ] = None,
    max_epsilon: Annotated[float, typer.Option(help="This site's privacy budget.")] = 10.0,
    delta: Annotated[float | None, typer.Option(help="δ (default min(1e-5, 1/(2n))).")] = None,
    allow_non_dp: Annotated[bool, typer.Option(help="Also train rounds without DP.")] = False,
    connect_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the coordinator.")
    ] = 60.0,
    approve_app: Annotated[
        list[str] | None,
        typer.Option(
            help="Also run this app bundle (FAB sha256); fedcare's own is always approved."
        ),
    ] = None,
    require_secure_aggregation: Annotated[
        bool, typer.Option(help="Send updates only under SecAgg+ (decline plain rounds).")
    ] = False,
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(help="An extra column of the export the data gate ignores (repeatable)."),
    ] = None,
    reset_ledger: Annotated[
        bool,
        typer.Option(
            help="Start a new privacy ledger: the old one is kept aside, the reset is written "
            "to the audit log and shown to the coordinator with every reply."
        ),
    ] = False,
) -> None:
    """Start this hospital's site daemon (a Flower SuperNode) in the background."""
    quiet_environment()
    from fedcare.client.daemon import SiteDaemon
    from fedcare.client.policy import SitePolicy
    from fedcare.privacy.pki import SITE_KEY

    def start() -> int:
        policy = SitePolicy(
            max_epsilon=max_epsilon,
            delta=delta,
            require_dp=not allow_non_dp,
            require_secure_aggregation=require_secure_aggregation,
            ignore_columns=tuple(ignore_column or ()),
        )
        if reset_ledger:
            _reset_ledger(state)
        return SiteDaemon(state).start(
            name,
            data,
            key or state / SITE_KEY,
            ca,
            coordinator,
            policy,
            connect_timeout_s=connect_timeout,
            approved_apps=tuple(approve_app or ()),
        )

    pid = run_or_exit(start)
    console.print(
        f"site {name}: connected to {coordinator} (pid {pid}; log {state}/logs/supernode.log)"
    )


def _reset_ledger(state: Path) -> None:
    from fedcare.client.audit import ledger_reset_entry
    from fedcare.client.daemon import SiteDaemon, SiteError
    from fedcare.privacy.ledger import reset_ledger

    if SiteDaemon(state).daemon.alive():
        raise SiteError(f"{state}: stop the site daemon before resetting its ledger")
    reset = reset_ledger(state)
    ledger_reset_entry(state, reset.moved_to, reset.resets)
    err_console.print(
        f"[bold yellow]ledger reset #{reset.resets}:[/] old ledger kept as "
        f"{reset.moved_to or '(none)'}; the coordinator will be told with every reply"
    )


@site_app.command("app-hash")
def site_app_hash() -> None:
    """The app bundle (FAB) hash of the installed fedcare version: what a site runs by default."""
    from fedcare.client.executor import fedcare_fab_hash

    console.print(fedcare_fab_hash())


@site_app.command("stop")
def site_stop(
    state: Annotated[Path, typer.Option(help="The site's state folder.", resolve_path=True)],
) -> None:
    """Stop this site's daemon and its helper processes."""
    from fedcare.client.daemon import SiteDaemon

    SiteDaemon(state).stop()
    console.print(f"site daemon in {state} stopped")
