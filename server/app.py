"""The fedcare ServerApp: the coordinator's round loop, identical in simulation and deployment.

Run config = the :class:`~fedcare.config.RunConfig` keys plus the runtime keys below. Each round
it aggregates with one of Flower's strategies, evaluates the global model at every site, and
rewrites ``rounds.json`` atomically; at the end it saves the global weights as safetensors.

In a deployment the coordinator passes ``site-registry``, the path of its ``sites.json``: a
reply's site is then the registered name of its authenticated node, and every site's signed
ledger head is checked against the one kept in ``ledger-heads.json`` beside it. A simulation
passes none (no authentication there; see :mod:`fedcare.server.tracking`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, ConfigRecordValues, Context
from flwr.serverapp import Grid, ServerApp
from flwr.superlink.grid.http_grid import HttpGrid

from fedcare import messages as keys
from fedcare.atomic import write_json_atomic
from fedcare.config import RunConfig
from fedcare.errors import ConfigError
from fedcare.privacy.secure_aggregation import SecAggSettings
from fedcare.runtime_keys import (
    MIN_SITES_KEY,
    OUT_DIR_KEY,
    REGISTRY_KEY,
    ROUNDS_FILE,
    RUNTIME_KEYS,
)
from fedcare.server import progress
from fedcare.server.grids import ResponsiveGrid
from fedcare.server.ledger_heads import HEADS_FILE, LedgerHeads
from fedcare.server.round_loop import run_rounds
from fedcare.server.secure_aggregation import SecureAggregationGrid
from fedcare.server.site_registry import SiteRegistry
from fedcare.server.strategies import build_strategy
from fedcare.server.tracking import RoundRecord, SiteTracking
from fedcare.server.validation import UpdateRules
from fedcare.tasks import get_task
from fedcare.weights import save_weights, to_record

WEIGHTS_FILE = "global_model.safetensors"
REPLY_TIMEOUT_S = 3600.0

app = ServerApp()


@dataclass(frozen=True)
class ServerSettings:
    """The ServerApp's view of its run config."""

    run: RunConfig
    out_dir: Path
    min_sites: int
    registry: Path | None = None

    @classmethod
    def from_run_config(cls, values: dict[str, Any]) -> ServerSettings:
        run = RunConfig.from_run_config({k: v for k, v in values.items() if k not in RUNTIME_KEYS})
        min_sites = values.get(MIN_SITES_KEY, 2)
        if not isinstance(min_sites, int) or min_sites < 1:
            raise ConfigError(
                f"run-config: {MIN_SITES_KEY} = {min_sites!r} must be an integer >= 1"
            )
        registry = str(values.get(REGISTRY_KEY) or "")
        return cls(
            run=run,
            out_dir=Path(str(values.get(OUT_DIR_KEY, "fedcare-out"))),
            min_sites=min_sites,
            registry=Path(registry) if registry else None,
        )


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


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Round 0 evaluation, then ``rounds`` rounds of train + per-site evaluation
    (:mod:`fedcare.server.round_loop`: each evaluation travels with the next training).

    With ``secure-aggregation`` the same loop runs over a :class:`SecureAggregationGrid`, whose
    train exchanges follow Flower's SecAgg+ protocol.
    """
    settings = ServerSettings.from_run_config(dict(context.run_config))
    run = settings.run
    model = get_task(run.task).build_model(run.model, seed=run.seed)
    initial = to_record(model)
    history: list[RoundRecord] = []

    def on_round(record: RoundRecord) -> None:
        history.append(record)
        write_json_atomic(settings.out_dir / ROUNDS_FILE, [r.to_json() for r in history])
        progress.publish(record, run.rounds)

    rules = UpdateRules(run.max_update_norm, run.weighting, dp=run.dp)
    if isinstance(grid, HttpGrid):  # deployed: ask for replies every 0.1 s, not every 3 s
        grid = ResponsiveGrid(grid)
    if run.secure_aggregation:
        grid = SecureAggregationGrid(grid, context, SecAggSettings.from_run(run))
    registry = heads = None
    if settings.registry is not None:
        registry = SiteRegistry.load(settings.registry)
        heads = LedgerHeads(settings.registry.parent / HEADS_FILE, registry.public_keys)
    inner = build_strategy(run, settings.min_sites)
    strategy = SiteTracking(inner, on_round, rules, registry=registry, heads=heads)
    arrays = run_rounds(
        strategy, grid, initial, run.rounds,
        train_config=ConfigRecord(request_config(run)),
        evaluate_config=ConfigRecord(request_config(run)),
        timeout=REPLY_TIMEOUT_S,
        fold=True,
    )  # fmt: skip
    save_weights(settings.out_dir / WEIGHTS_FILE, arrays.to_torch_state_dict())
