"""The model owner's registry: ``fedcare registry add|list|show|diff|validate|release|verify``.

From a finished run to a signed release: ``add`` makes the run's global model a version with
its lineage, ``validate`` has every site score it on its own held-out patients, ``release``
signs a bundle only when the gate policy holds at every site, ``verify`` checks a bundle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fedcare.cli.common import (
    configure_logging,
    console,
    err_console,
    quiet_environment,
    refuse,
    run_or_exit,
)
from fedcare.errors import ConfigError, ExitCode

registry_app = typer.Typer(
    help="The model owner's registry: versions, validation, release gate, signed bundles.",
    no_args_is_help=True,
)

RegistryOption = Annotated[
    Path,
    typer.Option(
        "--registry",
        envvar="FEDCARE_REGISTRY",
        help="Registry folder (created on first add).",
        resolve_path=True,
    ),
]
DEFAULT_REGISTRY = Path("registry")
VALIDATION_TIMEOUT_S = 1800.0


def _registry(path: Path) -> Any:
    from fedcare.server.model_registry import ModelRegistry

    return ModelRegistry(path)


@registry_app.command("add")
def registry_add(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.", resolve_path=True)],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Register a finished run's global model as the next version, with its lineage."""
    entry = run_or_exit(lambda: _registry(registry).add(run_dir))
    parent = f", parent {entry['parent']}" if entry["parent"] else ""
    console.print(
        f"registered {entry['version']}: {entry['task']} {entry['model']}, {entry['strategy']}, "
        f"{entry['rounds']} rounds{parent}; weights sha256 {entry['weights_sha256'][:16]}..."
    )


@registry_app.command("list")
def registry_list(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Every version: lineage at a glance, validation and release state."""
    views = run_or_exit(lambda: _registry(registry).versions())
    table = Table("version", "parent", "task", "model", "strategy", "rounds", "sites",
                  "max ε", "validated", "released")  # fmt: skip
    for view in views:
        sites = sorted({s for names in view["sites_per_round"].values() for s in names})
        epsilons = [_as_float(p["epsilon"]) for p in view["privacy"].values()]
        table.add_row(
            view["version"], view["parent"] or "-", view["task"], view["model"],
            view["strategy"], str(view["rounds"]), str(len(sites)),
            f"{max(epsilons):.2f}" if epsilons else "not private",  # inf prints as "inf"
            str(len(view["validations"])) if view["validations"] else "no",
            view["releases"][-1]["bundle"] if view["releases"] else "no",
        )  # fmt: skip
    console.print(table)


@registry_app.command("show")
def registry_show(
    version: Annotated[str, typer.Argument(help="Version id, e.g. v1.")],
    registry: RegistryOption = DEFAULT_REGISTRY,
    as_json: Annotated[bool, typer.Option("--json", help="The whole record as JSON.")] = False,
) -> None:
    """One version's lineage, privacy record, validations and releases."""
    view = run_or_exit(lambda: _registry(registry).get(version))
    if as_json:
        console.print_json(json.dumps(view))
        return
    run = view["run"]
    console.print(f"[bold]{view['version']}[/]  registered {view['registered_at']}")
    for label, value in (
        ("parent", view["parent"] or "none (a fresh model)"),
        ("run", f"{run['run_dir']} (run id {run['run_id']})"),
        ("config sha256", run["config_sha256"]),
        ("task / schema", f"{view['task']} / {view['schema_sha256'][:16]}..."),
        ("model / strategy", f"{view['model']} / {view['strategy']}, {view['rounds']} rounds"),
        ("fedcare / Flower", f"{view['fedcare_version']} / {view['flower_version']}"),
        ("weights sha256", view["weights_sha256"]),
    ):
        console.print(f"  {label:<17} {escape(str(value))}")
    rounds = view["sites_per_round"]
    console.print(
        "  sites per round   " + "; ".join(f"{r}: {', '.join(s) or '-'}" for r, s in rounds.items())
    )
    for site, privacy in view["privacy"].items():
        delta = "not reported" if privacy["delta"] is None else f"{privacy['delta']:.2g}"
        epsilon = _as_float(privacy["epsilon"])
        console.print(f"  privacy {site:<9} ε {epsilon:.3f}, δ {delta}")
    if not view["privacy"]:
        console.print("  privacy           none: trained without DP")
    for validation in view["validations"]:
        _print_validation(validation)
    for release in view["releases"]:
        console.print(f"  released {release['released_at']} -> {release['bundle']}")


def _print_validation(validation: dict[str, Any]) -> None:
    sites = ", ".join(validation["sites"]) or "none"
    console.print(f"  validation {validation['validated_at']} (sites: {sites})")
    table = Table("site", "patients", "AUROC (95% CI)", "accuracy", "sens.", "spec.", "Brier",
                  "cal. slope", "ECE")  # fmt: skip
    for site, cells in validation["sites"].items():
        for cell, m in sorted(cells.items(), key=lambda item: item[0] != "all"):
            table.add_row(
                site if cell == "all" else f"  {cell}", _count(m.get("patients")), _ci(m),
                _f(m.get("accuracy")), _f(m.get("sensitivity")), _f(m.get("specificity")),
                _f(m.get("brier")), _f(m.get("calibration-slope")), _f(m.get("ece")),
            )  # fmt: skip
    console.print(table)


def _as_float(value: Any) -> float:
    return float(value)  # "inf" (not private) included


def _count(value: Any) -> str:
    return "?" if not isinstance(value, int | float) else f"~{value:.0f}"


def _f(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.3f}"


def _ci(m: dict[str, Any]) -> str:
    return f"{_f(m.get('auroc'))} ({_f(m.get('auroc-ci-low'))}-{_f(m.get('auroc-ci-high'))})"


@registry_app.command("diff")
def registry_diff(
    a: Annotated[str, typer.Argument(help="A version id.")],
    b: Annotated[str, typer.Argument(help="Another version id.")],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """What differs between two versions' lineage (config, sites, privacy, weights...)."""
    from fedcare.server.model_registry import diff

    reg = _registry(registry)
    left, right = run_or_exit(lambda: (reg.get(a), reg.get(b)))
    changes = diff(left, right)
    if not changes:
        console.print(f"{a} and {b} have the same lineage")
        return
    table = Table("field", a, b)
    for key, x, y in changes:
        table.add_row(key, escape(json.dumps(x)), escape(json.dumps(y)))
    console.print(table)


@registry_app.command("validate")
def registry_validate(
    version: Annotated[str, typer.Argument(help="Version id to validate.")],
    registry: RegistryOption = DEFAULT_REGISTRY,
    coordinator: Annotated[
        Path | None,
        typer.Option(
            "--coordinator", help="Validate over this deployed federation.", resolve_path=True
        ),
    ] = None,
    min_sites: Annotated[int, typer.Option(help="Sites that must answer (deployed).")] = 2,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Validate over the version's simulated sites.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the sites.")
    ] = VALIDATION_TIMEOUT_S,
) -> None:
    """Every site scores the version on its own held-out patients; only aggregates return."""
    quiet_environment()
    configure_logging(verbose=False)
    if (coordinator is None) == (not simulate):
        refuse(ConfigError("give exactly one of --coordinator DIR or --simulate"))
    reg = _registry(registry)
    view = run_or_exit(lambda: reg.get(version))
    weights = run_or_exit(lambda: reg.weights(version))
    from fedcare.atomic import write_json_atomic
    from fedcare.config import RunConfig
    from fedcare.runtime_keys import (
        CANDIDATE_KEY,
        MODE_KEY,
        PREPROCESSING_FILE_KEY,
        VALIDATE_MODE,
    )

    config = run_or_exit(lambda: RunConfig.from_run_config(view["run"]["config"]))
    warning = served_preprocessing_warning(version, config)
    if warning:
        console.print(f"[yellow]{warning}[/]")
    runtime = {MODE_KEY: VALIDATE_MODE, CANDIDATE_KEY: str(weights)}
    # Statistics the sites released already (in training, or at an earlier validation) are
    # reused: each release spends privacy, and the model is validated as it will be served.
    earlier = [v["preprocessing"] for v in view["validations"] if v.get("preprocessing")]
    statistics = view.get("preprocessing") or (earlier[-1] if earlier else None)
    if statistics:
        path = weights.parent / "preprocessing.json"  # rewritten from the chained entry
        write_json_atomic(path, statistics)
        runtime[PREPROCESSING_FILE_KEY] = str(path)
    started = time.perf_counter()
    if coordinator is not None:
        result = run_or_exit(
            lambda: _validate_deployed(coordinator, config, min_sites, runtime, timeout)
        )
    else:
        result = run_or_exit(
            lambda: _validate_simulated(
                config, Path(view["run"]["run_dir"]), runtime, reg.root / "versions" / version
            )
        )
    entry = run_or_exit(lambda: reg.add_validation(version, result))
    _print_validation(entry)
    from fedcare.server.release_gate import validated_sites

    for site, why in entry.get("missing", {}).items():
        console.print(f"[yellow]  {site} sent no validation: {why}[/]")
    validated = validated_sites(entry["sites"])
    for site in sorted(set(entry["sites"]) - set(validated)):
        console.print(
            f"[yellow]  {site}: too few patients, events or non-events in its test set to "
            "report (its minimum cell); it did not validate the model[/]"
        )
    seconds = time.perf_counter() - started
    console.print(f"validated {version} at {len(validated)} site(s) in {seconds:.0f} s")


def _validate_deployed(
    folder: Path, config: Any, min_sites: int, runtime: dict[str, Any], timeout: float
) -> dict[str, Any]:
    from fedcare.server.coordinator import Coordinator
    from fedcare.server.model_validation import VALIDATION_FILE

    coordinator = Coordinator(folder)
    out = coordinator.submit(config, min_sites, runtime)
    console.print(f"validation run submitted -> {out}")
    path = coordinator.wait_for(out, VALIDATION_FILE, timeout)
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result | {"run_dir": str(out)}


def _validate_simulated(
    config: Any, run_dir: Path, runtime: dict[str, Any], version_dir: Path
) -> dict[str, Any]:
    from fedcare.simulations.runner import run_validation
    from fedcare.simulations.scenarios import get_scenario

    if not run_dir.is_dir():
        raise ConfigError(
            f"{run_dir}: the version's run folder is gone; its simulated sites' ledgers live there"
        )
    scenario = get_scenario(config.scenario, config.task)
    out = version_dir / f"validation-{time.strftime('%Y%m%d-%H%M%S')}"
    result: dict[str, Any] = run_validation(
        config, scenario, out, run_dir, trained_policies(config, scenario, run_dir), runtime
    )
    return result | {"run_dir": str(out)}


def trained_policies(config: Any, scenario: Any, run_dir: Path) -> dict[str, Any]:
    """The simulated sites' own policies as the run trained with them (budget and δ from its
    summary.json), so a validation's release is checked against the same budgets."""
    from fedcare.client.policy import SitePolicy
    from fedcare.simulations.simulation import site_policies

    policies: dict[str, Any] = site_policies(config, scenario, None)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    for site, spent in ((summary.get("privacy") or {}).get("sites") or {}).items():
        policies[site] = SitePolicy(
            max_epsilon=float(spent["max_epsilon"]), delta=float(spent["delta"]),
            require_dp=config.dp,
        )  # fmt: skip
    return policies


@registry_app.command("release")
def registry_release(
    version: Annotated[str, typer.Argument(help="Version id to release.")],
    policy: Annotated[
        Path, typer.Option("--policy", help="Gate policy (TOML, [gate]).", resolve_path=True)
    ],
    key: Annotated[
        Path, typer.Option("--key", help="The owner's release key (private).", resolve_path=True)
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.", resolve_path=True)],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Sign a release bundle, only if every gate criterion holds at every site."""
    from fedcare.server.release_gate import GatePolicy, judge

    reg = _registry(registry)
    gate = run_or_exit(lambda: GatePolicy.load(policy))
    view = run_or_exit(lambda: reg.get(version))
    failures = judge(gate, view)
    if failures:
        err_console.print(
            f"[bold red]error:[/] {version} does not pass the release gate ({policy}):"
        )
        for failure in failures:
            err_console.print(f"  {escape(str(failure))}", highlight=False)
        raise typer.Exit(code=int(ExitCode.GATE))
    from fedcare.server.release import write_bundle
    from fedcare.server.release_card import model_card, preprocessing

    weights = run_or_exit(lambda: reg.weights(version))
    bundle = run_or_exit(
        lambda: write_bundle(out, weights, preprocessing(view), model_card(view, gate), key)
    )
    run_or_exit(
        lambda: reg.add_release(
            version, {"bundle": str(bundle), "policy": gate.to_json(), "verdict": "passed"}
        )
    )
    console.print(f"released {version}: every gate criterion holds; signed bundle -> {bundle}")


@registry_app.command("verify")
def registry_verify(
    bundle: Annotated[Path, typer.Argument(help="A release bundle folder.", resolve_path=True)],
    key: Annotated[
        Path, typer.Option("--key", help="The owner's public release key.", resolve_path=True)
    ],
) -> None:
    """Check a bundle's signature: every file as the owner signed it, by the owner's key."""
    from fedcare.bundle import verify_bundle

    run_or_exit(lambda: verify_bundle(bundle, key))
    console.print(f"verified: {bundle} is signed by {key.name} and unchanged")


def served_preprocessing_warning(version: str, config: Any) -> str | None:
    """Why a version may score far below its training evaluation, or None.

    Validation scores a candidate as a release serves it: raw values standardised with the
    federation's statistics. A model trained with each site's own statistics
    (``--preprocessing site``, the default) saw differently scaled inputs, and can score near
    chance here (AUROC 0.45-0.50 at three sites for a model whose own evaluation was 0.73).
    """
    from fedcare.config import Preprocessing

    if config.preprocessing is Preprocessing.FEDERATION:
        return None
    return (
        f"warning: {version} was trained with each site's own standardisation; validation "
        "scores it as a release serves it, with the federation's statistics, so it may score far "
        "below its training evaluation - train with --preprocessing federation a model meant "
        "for release"
    )
