"""The ``fedcare`` command line. Handlers live here; the work lives in the packages.

Every fedcare error becomes one line on stderr (``error: ...``) and its documented exit code.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fedcare.errors import ConfigError, FedcareError

app = typer.Typer(
    name="fedcare",
    help="Federated learning across hospitals, on Flower, PyTorch and Opacus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


SecureAggregationOption = Annotated[
    bool | None,
    typer.Option(
        "--secure-aggregation/--no-secure-aggregation",
        help="SecAgg+: the coordinator learns only the sum of the sites' updates.",
    ),
]


@app.callback()
def _root() -> None:
    """Federated learning across hospitals, on Flower, PyTorch and Opacus."""


def _quiet_environment() -> None:
    """No network here and no telemetry from a clinical tool."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _configure_logging(verbose: bool) -> None:
    """fedcare's own logs to stderr; Flower's console handler only warns unless verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    from flwr.supercore.logger import update_console_handler

    logging.getLogger("flwr").propagate = False
    update_console_handler(level=logging.DEBUG if verbose else logging.WARNING)


def _run_or_exit(action: Callable[[], T]) -> T:
    try:
        return action()
    except FedcareError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=int(exc.exit_code)) from None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command()
def simulate(
    config: Annotated[Path | None, typer.Option("--config", help="TOML run config.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/<time>).")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="fedavg, fedprox, fedadam, fedyogi; robust: fedtrimmedavg, fedmedian, krum."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="logreg or mlp.")] = None,
    weighting: Annotated[str | None, typer.Option(help="uniform or examples.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Local batch size.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Local SGD learning rate.")] = None,
    server_learning_rate: Annotated[float | None, typer.Option(help="FedAdam/FedYogi eta.")] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="FedProx mu.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for model init and shuffling.")] = None,
    scenario: Annotated[str | None, typer.Option(help="Federation to simulate.")] = None,
    dp: Annotated[bool | None, typer.Option("--dp/--no-dp", help="DP-SGD at every site.")] = None,
    target_epsilon: Annotated[
        float | None, typer.Option(help="DP: ε each site may spend on this run.")
    ] = None,
    noise_multiplier: Annotated[
        float | None, typer.Option(help="DP: fixed noise multiplier.")
    ] = None,
    max_grad_norm: Annotated[
        float | None, typer.Option(help="DP: per-sample clipping norm.")
    ] = None,
    accountant: Annotated[str | None, typer.Option(help="DP: rdp or prv.")] = None,
    site_budget: Annotated[
        list[str] | None,
        typer.Option(help="A simulated site's own max ε, as SITE=EPS (repeatable)."),
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="DP: every simulated site's δ (default min(1e-5, 1/(2n))).")
    ] = None,
    secure_aggregation: SecureAggregationOption = None,
    secagg_num_shares: Annotated[
        float | None, typer.Option(help="SecAgg+ shares: fraction of sites (<= 1) or a count.")
    ] = None,
    secagg_threshold: Annotated[
        float | None, typer.Option(help="SecAgg+ shares needed to unmask: fraction or count.")
    ] = None,
    max_update_norm: Annotated[
        float | None, typer.Option(help="Reject (or, with SecAgg+, clip) updates above this norm.")
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            help="Make a simulated site misbehave, as SITE=KIND (nan, wrong-shape, scale100, "
            "dropout); repeatable."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Flower's and Ray's logs.")
    ] = False,
) -> None:
    """Simulate a federation (default: the four real heart-disease hospitals) with baselines."""
    _quiet_environment()
    from fedcare.config import load_config

    started = time.perf_counter()
    run_config = _run_or_exit(
        lambda: load_config(config).replace(
            rounds=rounds, strategy=strategy, model=model, weighting=weighting,
            local_epochs=local_epochs, batch_size=batch_size, learning_rate=learning_rate,
            server_learning_rate=server_learning_rate, proximal_mu=proximal_mu, seed=seed,
            scenario=scenario, dp=dp, target_epsilon=target_epsilon,
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, accountant=accountant,
            secure_aggregation=secure_aggregation, secagg_num_shares=secagg_num_shares,
            secagg_threshold=secagg_threshold, max_update_norm=max_update_norm,
        )
    )  # fmt: skip
    budgets = _run_or_exit(lambda: _parse_budgets(site_budget or []))
    attacks = _run_or_exit(lambda: _parse_attacks(run_config, attack or []))
    out_dir = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    _configure_logging(verbose)
    console.print(
        f"fedcare simulate: scenario [bold]{run_config.scenario}[/], strategy "
        f"[bold]{run_config.strategy}[/], model {run_config.model}, {run_config.rounds} rounds "
        f"-> {out_dir}"
    )
    from fedcare.simulations import simulate as run_simulation

    summary = _run_or_exit(
        lambda: run_simulation(
            run_config,
            out_dir,
            on_round=_print_round,
            site_budgets=budgets,
            site_delta=delta,
            attacks=attacks,
        )
    )
    _print_summary(summary)
    console.print(f"run folder: {out_dir}   (summary.json, rounds.json, plots)")
    console.print(f"finished in {time.perf_counter() - started:.1f} s")


def _parse_budgets(values: list[str]) -> dict[str, float]:
    budgets: dict[str, float] = {}
    for value in values:
        name, _, number = value.partition("=")
        try:
            budgets[name.strip()] = float(number)
        except ValueError:
            raise ConfigError(
                f"--site-budget {value!r}: expected SITE=EPSILON, e.g. va=0.5"
            ) from None
    return budgets


def _parse_attacks(run_config: Any, values: list[str]) -> dict[str, Any]:
    if not values:
        return {}
    from fedcare.simulations.adversaries import parse_attacks
    from fedcare.simulations.scenarios import get_scenario

    scenario = get_scenario(run_config.scenario, run_config.task)
    return parse_attacks(values, [site.name for site in scenario.sites])


def _print_round(record: Any, total: int) -> None:
    parts = []
    for name, site in sorted(record.sites.items()):
        part = f"{name[:5]} {site.accuracy:.3f}"
        if name in record.epsilon:
            part += f" ε{record.epsilon[name]:.2f}"
        if name in record.refused:
            part += f" [refused: {record.refused[name]}]"
        if name in record.rejected:
            part += " [update rejected]"
        parts.append(part)
    console.print(
        f"round {record.round:>3}/{total}  mean {record.mean_accuracy:.3f} | {' '.join(parts)}"
    )


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(
        title=f"Per-site test accuracy ({summary['strategy']}, {summary['rounds']} rounds)"
    )
    privacy = summary.get("privacy")
    columns = ["site", "train", "test", "federated", "AUROC", "local", "pooled"]
    columns += ["ε / max", "σ"] if privacy else []
    for column in columns:
        table.add_column(column, justify="left" if column == "site" else "right")
    baselines = summary["baselines"]
    for name, site in summary["sites"].items():
        row = [
            name, str(site["n_train"]), str(site["n_test"]), _fmt(site["accuracy"]),
            _fmt(site["auroc"]), _fmt(baselines["local"][name]["sites"][name]["accuracy"]),
            _fmt(baselines["pooled"]["sites"][name]["accuracy"]),
        ]  # fmt: skip
        if privacy:
            spent = privacy["sites"][name]
            row += [
                f"{spent['epsilon']:.3f} / {spent['max_epsilon']:g}",
                _fmt(spent["noise_multiplier"]),
            ]
        table.add_row(*row)
    best_local = max(result["mean_accuracy"] for result in baselines["local"].values())
    table.add_row(
        "mean", "", "", f"[bold]{summary['mean_accuracy']:.3f}[/]", "",
        f"best {best_local:.3f}", _fmt(baselines["pooled"]["mean_accuracy"]),
        *(["", ""] if privacy else []),
    )  # fmt: skip
    console.print(table)
    if privacy:
        console.print(
            f"ε from each site's own ledger, {privacy['accountant']} accountant, δ ≤ "
            f"{privacy['delta']:g}; baselines are trained without DP"
        )
    for refusal in summary.get("refusals", []):
        site, number, reason = refusal["site"], refusal["round"], refusal["reason"]
        console.print(f"[yellow]site {site} refused round {number}: {reason}[/]")
    for rejection in summary.get("rejected", []):
        site, number, reason = rejection["site"], rejection["round"], rejection["reason"]
        console.print(f"[yellow]round {number}: {site}'s update rejected: {reason}[/]")
    console.print(
        "local = each site's own model on its own test set; its mean row is the best local "
        "model's mean over all sites' test sets"
    )


privacy_app = typer.Typer(help="A site's privacy ledger and spending.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("report")
def privacy_report(
    state: Annotated[Path, typer.Option("--state", help="The site's state folder.")],
    accountant: Annotated[str, typer.Option(help="rdp or prv.")] = "rdp",
    delta: Annotated[float | None, typer.Option(help="δ (default: the ledger's).")] = None,
) -> None:
    """Print a site's privacy ledger and the ε it adds up to."""
    from fedcare.config import AccountantName, parse_choice
    from fedcare.privacy.accounting import epsilon_from_events
    from fedcare.privacy.ledger import PrivacyLedger

    def read() -> tuple[Any, AccountantName]:
        if not state.is_dir():
            raise ConfigError(f"{state}: state folder not found")
        name = parse_choice(AccountantName, "--accountant", accountant)
        return PrivacyLedger(state).read(), name

    ledger = PrivacyLedger(state)
    events, name = _run_or_exit(read)
    table = Table(title=f"Privacy ledger: {ledger.path}")
    for column in ("#", "run", "round", "kind", "σ", "sample rate", "steps", "δ", "clip", "time"):
        table.add_column(
            column, justify="right" if column not in ("run", "kind", "time") else "left"
        )
    for index, e in enumerate(events, 1):
        table.add_row(
            str(index), e.run_id, str(e.round), e.kind, f"{e.noise_multiplier:.4g}",
            f"{e.sample_rate:.4g}", str(e.steps), f"{e.delta:g}", f"{e.max_grad_norm:g}", e.time,
        )  # fmt: skip
    console.print(table)
    at = delta if delta is not None else max((e.delta for e in events), default=1e-5)
    spent = epsilon_from_events(events, at, name)
    runs = len({e.run_id for e in events})
    console.print(
        f"{len(events)} event(s) over {runs} run(s); cumulative ε = {spent:.4f} at δ = {at:g} "
        f"({name} accountant)"
    )


site_app = typer.Typer(help="The hospital site: check data, run the daemon.", no_args_is_help=True)
app.add_typer(site_app, name="site")


@site_app.command("check")
def site_check(
    data: Annotated[Path, typer.Option("--data", help="The site's CSV or Parquet file.")],
    task: Annotated[
        str, typer.Option(help="Task whose schema the file must follow.")
    ] = "heart-disease",
    name: Annotated[str, typer.Option(help="Site name (for messages).")] = "site",
) -> None:
    """Run the data gate (schema + de-identification guard) on a site file; nothing is sent."""
    from fedcare.tasks import get_task

    loaded = _run_or_exit(lambda: get_task(task).load_site(name, data))
    console.print(
        f"{data}: passes the {task} data gate; {loaded.n_train} training and {loaded.n_test} "
        f"test rows after preprocessing, {loaded.x_train.shape[1]} features"
    )


@site_app.command("audit")
def site_audit(
    state: Annotated[Path, typer.Option("--state", help="The site's state folder.")],
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
            if entry["kind"] == "refused-app":
                sent = f"refused unapproved app bundle {entry['fab_hash']} (nothing sent)"
            where = f"run {entry['run_id']} round {entry['round']} {entry['message_type']}"
            console.print(f"{entry['time']} {where}: {sent}")
    console.print(f"{log.path}: {len(entries)} entries, hash chain verified")


@site_app.command("start")
def site_start(
    name: Annotated[str, typer.Option(help="This site's name (as registered).")],
    data: Annotated[Path, typer.Option(help="The site's CSV or Parquet file.")],
    state: Annotated[Path, typer.Option(help="State folder: ledger, audit log, logs.")],
    key: Annotated[Path, typer.Option(help="The site.key issued by the coordinator.")],
    ca: Annotated[Path, typer.Option(help="The federation's ca.crt.")],
    coordinator: Annotated[str, typer.Option(help="Coordinator address HOST:PORT.")],
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
) -> None:
    """Start this hospital's site daemon (a Flower SuperNode) in the background."""
    _quiet_environment()
    from fedcare.client.daemon import SiteDaemon
    from fedcare.client.policy import SitePolicy

    def start() -> int:
        policy = SitePolicy(
            max_epsilon=max_epsilon,
            delta=delta,
            require_dp=not allow_non_dp,
            require_secure_aggregation=require_secure_aggregation,
        )
        return SiteDaemon(state).start(
            name,
            data,
            key,
            ca,
            coordinator,
            policy,
            connect_timeout_s=connect_timeout,
            approved_apps=tuple(approve_app or ()),
        )

    pid = _run_or_exit(start)
    console.print(
        f"site {name}: connected to {coordinator} (pid {pid}; log {state}/logs/supernode.log)"
    )


@site_app.command("app-hash")
def site_app_hash() -> None:
    """The app bundle (FAB) hash of the installed fedcare version: what a site runs by default."""
    from fedcare.client.executor import fedcare_fab_hash

    console.print(fedcare_fab_hash())


@site_app.command("stop")
def site_stop(state: Annotated[Path, typer.Option(help="The site's state folder.")]) -> None:
    """Stop this site's daemon and its helper processes."""
    from fedcare.client.daemon import SiteDaemon

    SiteDaemon(state).stop()
    console.print(f"site daemon in {state} stopped")


pki_app = typer.Typer(
    help="The federation's CA, TLS certificate and site keys.", no_args_is_help=True
)
app.add_typer(pki_app, name="pki")


@pki_app.command("init")
def pki_init(
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder.")],
    host: Annotated[
        list[str] | None, typer.Option(help="Host name or IP sites connect to (repeat).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace existing keys.")] = False,
) -> None:
    """Create the federation's CA and the coordinator's TLS certificate."""
    from fedcare.privacy.pki import init_federation

    written = _run_or_exit(
        lambda: init_federation(folder, host or ["localhost", "127.0.0.1"], force)
    )
    console.print("created " + ", ".join(str(p) for p in written) + " (private keys 0600)")


@pki_app.command("add-site")
def pki_add_site(
    name: Annotated[str, typer.Argument(help="Site name.")],
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create a site's key pair and register its public key with the coordinator."""
    from fedcare.privacy.pki import add_site

    keys = _run_or_exit(lambda: add_site(folder, name, force))
    console.print(
        f"site {name}: give {keys.private_key} and {folder / 'ca.crt'} to the site; public key "
        f"{keys.public_key} is registered (a running coordinator: 'coordinator register')"
    )


coordinator_app = typer.Typer(
    help="The model owner's coordinator (Flower SuperLink).", no_args_is_help=True
)
app.add_typer(coordinator_app, name="coordinator")


@coordinator_app.command("start")
def coordinator_start(
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder (from pki init).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
) -> None:
    """Start the SuperLink with TLS and site authentication; register every site."""
    _quiet_environment()
    from fedcare.server.coordinator import Coordinator

    address = _run_or_exit(lambda: Coordinator(folder).start(host, port))
    console.print(f"coordinator listening on {address} (TLS, site authentication)")


@coordinator_app.command("register")
def coordinator_register(folder: Annotated[Path, typer.Option("--dir")]) -> None:
    """Register sites added with 'pki add-site' since the coordinator started."""
    from fedcare.server.coordinator import Coordinator

    nodes = _run_or_exit(lambda: Coordinator(folder).register_sites())
    console.print(f"registered sites: {', '.join(sorted(nodes)) or 'none'}")


@coordinator_app.command("run")
def coordinator_run(
    folder: Annotated[Path, typer.Option("--dir")],
    min_sites: Annotated[int, typer.Option(help="Sites every round waits for.")],
    config: Annotated[Path | None, typer.Option("--config", help="TOML run config.")] = None,
    rounds: Annotated[int | None, typer.Option()] = None,
    strategy: Annotated[str | None, typer.Option()] = None,
    dp: Annotated[bool | None, typer.Option("--dp/--no-dp")] = None,
    target_epsilon: Annotated[float | None, typer.Option()] = None,
    secure_aggregation: SecureAggregationOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the run.")] = 3600.0,
) -> None:
    """Submit a fedcare run to the federation and follow it round by round."""
    _quiet_environment()
    from fedcare.config import load_config
    from fedcare.server.coordinator import Coordinator

    run_config = _run_or_exit(
        lambda: load_config(config).replace(
            rounds=rounds, strategy=strategy, dp=dp, target_epsilon=target_epsilon,
            secure_aggregation=secure_aggregation,
        )
    )  # fmt: skip
    coordinator = Coordinator(folder)
    started = time.perf_counter()
    out = _run_or_exit(lambda: coordinator.submit(run_config, min_sites))
    console.print(f"run submitted -> {out}")

    def show(record: dict[str, Any]) -> None:
        sites = " ".join(f"{n[:5]} {s['accuracy']:.3f}" for n, s in record["sites"].items())
        console.print(
            f"round {record['round']:>3}/{run_config.rounds}  "
            f"mean {record['mean_accuracy']:.3f} | {sites}  ({time.perf_counter() - started:.0f} s)"
        )
        for site, reason in record.get("refused", {}).items():
            console.print(f"[yellow]  {site} sent no update: {reason}[/]")
        for site, reason in record.get("rejected", {}).items():
            console.print(f"[yellow]  {site}'s update rejected: {reason}[/]")

    _run_or_exit(lambda: coordinator.follow(out, run_config.rounds, show, timeout))
    console.print(f"run finished: {out}")


@coordinator_app.command("status")
def coordinator_status(folder: Annotated[Path, typer.Option("--dir")]) -> None:
    """Which sites are connected, and the latest run's round."""
    from fedcare.server.coordinator import Coordinator

    status = _run_or_exit(lambda: Coordinator(folder).status())
    console.print(
        f"coordinator {status['address']}; run {status['run']} at round {status['round']}"
    )
    for site, state in sorted(status["sites"].items()):
        console.print(f"  {site}: {state}")


@coordinator_app.command("stop")
def coordinator_stop(folder: Annotated[Path, typer.Option("--dir")]) -> None:
    """Stop the SuperLink and its helper processes."""
    from fedcare.server.coordinator import Coordinator

    Coordinator(folder).stop()
    console.print("coordinator stopped")


bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("dp")
def bench_dp(
    repetitions: Annotated[int, typer.Option(help="Timed repetitions per variant (median).")] = 7,
    synthetic_rows: Annotated[
        int, typer.Option(help="Rows of the synthetic tabular set.")
    ] = 20_000,
    threads: Annotated[str, typer.Option(help="Comma-separated torch thread counts.")] = "1,2",
) -> None:
    """One local epoch with Opacus DP-SGD vs without, per model, mode and thread count."""
    from fedcare.simulations.benchmarks import run_dp_benchmark
    from fedcare.simulations.scenarios import embedded_data_dir

    counts = tuple(int(t) for t in threads.split(","))
    started = time.perf_counter()
    rows = run_dp_benchmark(
        embedded_data_dir() / "processed.cleveland.data",
        repetitions=repetitions,
        synthetic_rows=synthetic_rows,
        thread_counts=counts,
        progress=lambda text: console.print(f"timing {text} ..."),
    )
    table = Table(title=f"DP-SGD vs plain local epoch (median of {repetitions})")
    for column in ("workload", "threads", "variant", "median ms", "DP / plain"):
        table.add_column(column, justify="left" if column in ("workload", "variant") else "right")
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        table.add_row(
            row.workload, str(row.threads), row.variant, f"{row.median_s * 1000:.1f}", ratio
        )
    console.print(table)
    for workload in dict.fromkeys(r.workload for r in rows):
        for count in counts:
            candidates = [
                r for r in rows if r.workload == workload and r.threads == count and r.ratio
            ]
            best = min(candidates, key=lambda r: r.median_s)
            console.print(
                f"best DP on {workload}, {count} thread(s): {best.variant} {best.ratio:.2f}x plain"
            )
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s")


@bench_app.command("latency")
def bench_latency(rounds: Annotated[int, typer.Option(help="Rounds per environment.")] = 4) -> None:
    """Per-round time of 3 hospitals: simulation vs real deployment vs stock Flower."""
    _quiet_environment()
    _configure_logging(verbose=False)
    from fedcare.simulations.benchmarks.round_latency import run_latency_benchmark

    rows = run_latency_benchmark(rounds, progress=lambda text: console.print(text))
    table = Table(title=f"Seconds per round, 3 sites, median of {rounds} rounds")
    for column in ("environment", "median s/round", "each round (s)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.environment,
            f"{row.median_round_s:.2f}",
            " ".join(f"{t:.1f}" for t in row.round_times_s),
        )
    console.print(table)
    deployed, stock = rows[1].median_round_s, rows[2].median_round_s
    simulated = rows[0].median_round_s
    console.print(
        f"fedcare deployed / stock Flower: {deployed / stock:.2f}x; simulation {simulated:.2f} s"
    )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


if __name__ == "__main__":
    main()
