"""The fedcare ServerApp: the coordinator's round loop, identical in simulation and deployment.

Run config = the :class:`~fedcare.config.RunConfig` keys plus the runtime keys below. Each round
it aggregates with one of Flower's strategies, evaluates the global model at every site, and
rewrites ``rounds.json`` atomically; at the end it saves the global weights as safetensors.

``mode = "validate"`` runs no rounds: every site scores the weights in ``candidate``
(:mod:`fedcare.server.model_validation`) and the result is ``validation.json``. Either way the
ServerApp first writes ``run.record.json`` (:mod:`fedcare.run_record`), the run's lineage.

In a deployment the coordinator passes ``site-registry``, the path of its ``sites.json``: a
reply's site is then the registered name of its authenticated node, and every site's signed
ledger head is checked against the one kept in ``ledger-heads.json`` beside it. A simulation
passes none (no authentication there; see :mod:`fedcare.server.tracking`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Context
from flwr.serverapp import Grid, ServerApp
from flwr.superlink.grid.http_grid import HttpGrid

from fedcare import messages as keys
from fedcare.atomic import remove_stale_temp_files, write_json_atomic
from fedcare.config import Preprocessing, RunConfig
from fedcare.errors import ConfigError
from fedcare.privacy.secure_aggregation import SecAggSettings
from fedcare.run_record import RunRecord, schema_sha256
from fedcare.runtime_keys import (
    CANDIDATE_KEY,
    DEFAULT_MIN_SUBGROUP_EVENTS,
    DEFAULT_MIN_SUBGROUP_PATIENTS,
    DEFAULT_ROUND_TIMEOUT_S,
    INITIAL_MODEL_KEY,
    MIN_SITES_KEY,
    MIN_SUBGROUP_EVENTS_KEY,
    MIN_SUBGROUP_PATIENTS_KEY,
    MODE_KEY,
    OUT_DIR_KEY,
    PREPROCESSING_FILE_KEY,
    REGISTRY_KEY,
    RESUME_KEY,
    ROUND_TIMEOUT_KEY,
    ROUNDS_FILE,
    RUNTIME_KEYS,
    TRAIN_MODE,
    VALIDATE_MODE,
)
from fedcare.server import progress
from fedcare.server.checkpoint import (
    Checkpoint,
    check_resumable,
    load_checkpoint,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)
from fedcare.server.grids import ResponsiveGrid
from fedcare.server.ledger_heads import HEADS_FILE, LedgerHeads
from fedcare.server.model_validation import (
    PREPROCESSING_FILE,
    connect,
    federation_statistics,
    statistics_noise,
    validate_candidate,
)
from fedcare.server.round_loop import run_rounds
from fedcare.server.secure_aggregation import SecureAggregationGrid
from fedcare.server.site_registry import SiteRegistry
from fedcare.server.strategies import build_strategy
from fedcare.server.tracking import RoundRecord, SiteNames, SiteTracking
from fedcare.server.validation import UpdateRules
from fedcare.tasks import get_task
from fedcare.weights import read_weights, save_weights, to_record

WEIGHTS_FILE = "global_model.safetensors"
PRIVACY_FILE = "privacy.json"  # deployed runs: each site's last signed ledger head
REPLY_TIMEOUT_S = 3600.0  # validation and statistics exchanges (rounds: ROUND_TIMEOUT_KEY)

app = ServerApp()


@dataclass(frozen=True)
class ServerSettings:
    """The ServerApp's view of its run config."""

    run: RunConfig
    out_dir: Path
    min_sites: int
    registry: Path | None = None
    mode: str = TRAIN_MODE
    candidate: Path | None = None  # validate mode: the weights the sites score
    initial_model: Path | None = None  # train mode: start from these weights
    preprocessing_file: Path | None = None  # validate mode: the statistics it trained with
    min_subgroup_patients: int = DEFAULT_MIN_SUBGROUP_PATIENTS
    min_subgroup_events: int = DEFAULT_MIN_SUBGROUP_EVENTS
    resume: bool = False
    round_timeout: float = DEFAULT_ROUND_TIMEOUT_S

    @classmethod
    def from_run_config(cls, values: dict[str, Any]) -> ServerSettings:
        run = RunConfig.from_run_config({k: v for k, v in values.items() if k not in RUNTIME_KEYS})
        min_sites = values.get(MIN_SITES_KEY, 2)
        if not isinstance(min_sites, int) or min_sites < 1:
            raise ConfigError(
                f"run-config: {MIN_SITES_KEY} = {min_sites!r} must be an integer >= 1"
            )
        mode = str(values.get(MODE_KEY) or TRAIN_MODE)
        if mode not in (TRAIN_MODE, VALIDATE_MODE):
            raise ConfigError(
                f"run-config: {MODE_KEY} = {mode!r} must be {TRAIN_MODE!r} or {VALIDATE_MODE!r}"
            )
        thresholds = {}
        for key, default in (
            (MIN_SUBGROUP_PATIENTS_KEY, DEFAULT_MIN_SUBGROUP_PATIENTS),
            (MIN_SUBGROUP_EVENTS_KEY, DEFAULT_MIN_SUBGROUP_EVENTS),
        ):
            value = values.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"run-config: {key} = {value!r} must be an integer >= 1")
            thresholds[key] = value
        round_timeout = values.get(ROUND_TIMEOUT_KEY, DEFAULT_ROUND_TIMEOUT_S)
        if (
            not isinstance(round_timeout, int | float)
            or isinstance(round_timeout, bool)
            or not round_timeout > 0
        ):
            raise ConfigError(
                f"run-config: {ROUND_TIMEOUT_KEY} = {round_timeout!r} must be seconds > 0"
            )
        candidate = _optional_path(values, CANDIDATE_KEY)
        if mode == VALIDATE_MODE and candidate is None:
            raise ConfigError(f"run-config: {MODE_KEY} = validate needs {CANDIDATE_KEY} (weights)")
        return cls(
            run=run,
            out_dir=Path(str(values.get(OUT_DIR_KEY, "fedcare-out"))),
            min_sites=min_sites,
            registry=_optional_path(values, REGISTRY_KEY),
            mode=mode,
            candidate=candidate,
            initial_model=_optional_path(values, INITIAL_MODEL_KEY),
            preprocessing_file=_optional_path(values, PREPROCESSING_FILE_KEY),
            min_subgroup_patients=thresholds[MIN_SUBGROUP_PATIENTS_KEY],
            min_subgroup_events=thresholds[MIN_SUBGROUP_EVENTS_KEY],
            resume=bool(values.get(RESUME_KEY, False)),
            round_timeout=float(round_timeout),
        )


def _optional_path(values: dict[str, Any], key: str) -> Path | None:
    text = str(values.get(key) or "")
    return Path(text) if text else None


def request_config(run: RunConfig) -> dict[str, ConfigRecordValues]:
    """What every site needs to train or evaluate this run's model."""
    return {
        keys.TASK: run.task,
        keys.MODEL: str(run.model),
        keys.LOCAL_EPOCHS: run.local_epochs,
        keys.BATCH_SIZE: run.batch_size,
        keys.LEARNING_RATE: run.learning_rate,
        keys.SEED: run.seed,
        keys.WEIGHTING: str(run.weighting),
        keys.DP: run.dp,
        keys.DP_TARGET_EPSILON: run.target_epsilon,
        keys.DP_NOISE_MULTIPLIER: run.noise_multiplier,
        keys.DP_MAX_GRAD_NORM: run.max_grad_norm,
        keys.DP_PLANNED_ROUNDS: run.rounds,
        keys.DP_ACCOUNTANT: str(run.accountant),
    }


def _initial_weights(settings: ServerSettings) -> tuple[ArrayRecord, str | None]:
    """The run's starting model and, when it came from a file, that file's sha256 (how the
    registry finds a version's parent)."""
    run = settings.run
    model = get_task(run.task).build_model(run.model, seed=run.seed)
    if settings.initial_model is None:
        return to_record(model), None
    path = settings.initial_model
    try:
        model.load_state_dict(read_weights(path))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot start from these weights ({type(exc).__name__}); give the "
            f"{WEIGHTS_FILE} of a version of the same task and model"
        ) from None
    return to_record(model), hashlib.sha256(path.read_bytes()).hexdigest()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Round 0 evaluation, then ``rounds`` rounds of train + per-site evaluation
    (:mod:`fedcare.server.round_loop`: each evaluation travels with the next training); or,
    in validate mode, the cross-site validation of one candidate model.

    With ``secure-aggregation`` the same loop runs over a :class:`SecureAggregationGrid`, whose
    train exchanges follow Flower's SecAgg+ protocol.
    """
    settings = ServerSettings.from_run_config(dict(context.run_config))
    run = settings.run
    resumed: Checkpoint | None = None
    if settings.resume:  # the run continues: its record, lineage and statistics stay as they are
        for name in (ROUNDS_FILE, PRIVACY_FILE, WEIGHTS_FILE):  # this run's own files: a crash
            remove_stale_temp_files(settings.out_dir / name)  # mid-write left its temp file
        resumed = load_checkpoint(settings.out_dir)
        check_resumable(resumed, run.to_run_config(), settings.out_dir)
        initial = resumed.weights
    else:
        initial, initial_sha = _initial_weights(settings)
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        record = RunRecord.create(str(context.run_id), run.to_run_config(), initial_sha)
        record.write(settings.out_dir)
    if isinstance(grid, HttpGrid):  # deployed: ask for replies every 0.1 s, not every 3 s
        grid = ResponsiveGrid(grid)
    registry = heads = None
    if settings.registry is not None:
        registry = SiteRegistry.load(settings.registry)
        heads = LedgerHeads(settings.registry.parent / HEADS_FILE, registry.public_keys)
    if settings.mode == VALIDATE_MODE:
        _validate(grid, settings, SiteNames(registry), heads)
        return
    run_uid = RunRecord.read(settings.out_dir).run_id
    request = request_config(run) | {keys.RUN_UID: run_uid}
    statistics_sites: list[str] = []
    if resumed is not None and run.preprocessing is Preprocessing.FEDERATION:
        # released once, before round 1: a resumed run reuses them, the sites release nothing
        record = json.loads((settings.out_dir / PREPROCESSING_FILE).read_text(encoding="utf-8"))
        statistics_sites = list(record["sites"])
        request |= {keys.PREPROCESSING_MEAN: record["mean"], keys.PREPROCESSING_STD: record["std"]}
    elif run.preprocessing is Preprocessing.FEDERATION:  # before SecAgg+: a plain exchange
        exchange = connect(grid, settings.min_sites, SiteNames(registry), heads)
        sigma = statistics_noise(run.target_epsilon if run.dp else 0.0)
        stats, record = federation_statistics(
            exchange, request, settings.min_sites, REPLY_TIMEOUT_S, sigma
        )
        write_json_atomic(settings.out_dir / PREPROCESSING_FILE, record)
        statistics_sites = list(record["sites"])
        request |= {
            keys.PREPROCESSING_MEAN: list(stats.mean),
            keys.PREPROCESSING_STD: list(stats.std),
        }
    history = [RoundRecord.from_json(r) for r in resumed.history] if resumed else []

    def on_round(record: RoundRecord) -> None:
        history.append(record)
        write_json_atomic(settings.out_dir / ROUNDS_FILE, [r.to_json() for r in history])
        progress.publish(record, run.rounds)

    rules = UpdateRules(run.max_update_norm, run.weighting, dp=run.dp)
    if run.secure_aggregation:
        grid = SecureAggregationGrid(grid, context, SecAggSettings.from_run(run))
    inner = build_strategy(run, settings.min_sites)
    strategy = SiteTracking(
        inner, on_round, rules, registry=registry, heads=heads,
        # under SecAgg+ the updates arrive already summed; Flower's protocol has its own minimum
        min_sites=None if run.secure_aggregation else settings.min_sites,
    )  # fmt: skip
    resumes: list[dict[str, Any]] = []
    if resumed is not None:
        restore_strategy_state(inner, resumed.strategy_state)
        strategy.restore_pending(resumed.pending)
        resumes = [
            *resumed.resumes,
            {"flower_run_id": str(context.run_id), "from_round": resumed.round},
        ]
        write_json_atomic(settings.out_dir / ROUNDS_FILE, [r.to_json() for r in history])

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        save_checkpoint(
            settings.out_dir,
            Checkpoint(
                round=server_round,
                rounds=run.rounds,
                run_uid=run_uid,
                config=run.to_run_config(),
                weights=arrays,
                strategy_state=strategy_state(inner),
                history=[r.to_json() for r in history],
                pending=strategy.pending(),
                resumes=resumes,
                schema_sha256=schema_sha256(run.task),
            ),
        )

    start = 1
    if resumed is None:
        checkpoint(0, initial)  # a crash before round 1 ends still resumes, statistics kept
    else:
        start = resumed.round + 1
    arrays = run_rounds(
        strategy, grid, initial, run.rounds,
        train_config=ConfigRecord(request),
        evaluate_config=ConfigRecord(request),
        timeout=settings.round_timeout,
        fold=True,
        start_round=start,
        on_aggregated=checkpoint,
    )  # fmt: skip
    save_weights(settings.out_dir / WEIGHTS_FILE, arrays.to_torch_state_dict())
    if heads is not None:  # deployed: what each site's signed ledger head says it spent
        sites = sorted(
            {s for r in history for s in (*r.sites, *r.epsilon, *r.train_loss)}
            | set(statistics_sites)  # a site whose statistics went in, even if it trained in none
        )
        write_json_atomic(settings.out_dir / PRIVACY_FILE, heads.privacy_record(sites))


def _validate(
    grid: Grid, settings: ServerSettings, names: SiteNames, heads: LedgerHeads | None
) -> None:
    """Validate mode: every site scores ``candidate`` (see module docstring)."""
    assert settings.candidate is not None  # from_run_config refuses validate without one
    model = get_task(settings.run.task).build_model(settings.run.model, seed=settings.run.seed)
    try:
        model.load_state_dict(read_weights(settings.candidate))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"{settings.candidate}: not weights of a {settings.run.task} "
            f"{settings.run.model} model ({type(exc).__name__})"
        ) from None
    preprocessing = None
    if settings.preprocessing_file is not None:
        preprocessing = json.loads(settings.preprocessing_file.read_text(encoding="utf-8"))
    validate_candidate(
        connect(grid, settings.min_sites, names, heads),
        to_record(model),
        request_config(settings.run),
        {
            keys.MIN_SUBGROUP_PATIENTS: settings.min_subgroup_patients,
            keys.MIN_SUBGROUP_EVENTS: settings.min_subgroup_events,
        },
        settings.min_sites,
        settings.out_dir,
        timeout=REPLY_TIMEOUT_S,
        preprocessing=preprocessing,
    )
