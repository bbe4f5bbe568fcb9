"""Stock Flower for the latency reference: Flower's FedAvg and a small torch ClientApp.

The reference row of ``fedcare bench latency`` must cost what any real Flower app costs per
round in Flower's default deployment, and nothing of fedcare's: so this module imports only
Flower, torch and the standard library, and :func:`write_app` ships it *inside* the app bundle
(``stock_app.py`` beside ``pyproject.toml``), as ``flwr new`` apps ship their code. Each
``flwr-clientapp`` process then imports torch, trains ``torch.nn.Linear(13, 1)`` for one short
epoch on synthetic rows and evaluates it, as a real app would.

Instrumentation, kept out of the timed path's way: ``evaluate_fn`` (called by
``Strategy.start`` after each round's train *and* federated evaluation) appends the time to
``stock_rounds.json`` in the run config's ``out-dir``, and every ClientApp call appends its
process id to ``clientapp_pids.txt`` there, so the benchmark can show how many processes ran.

Run config: ``rounds``, ``min-sites``, ``out-dir``. The module also stays importable as
``fedcare.simulations.benchmarks.stock_app`` (tests submit it as "an app other than fedcare's").
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

ROUNDS_FILE = "stock_rounds.json"
PIDS_FILE = "clientapp_pids.txt"
FEATURES = 13  # as the heart-disease rows fedcare trains on
ROWS, BATCH, LEARNING_RATE = 64, 8, 0.05

server = ServerApp()
client = ClientApp()


def _model() -> torch.nn.Linear:
    return torch.nn.Linear(FEATURES, 1)


def _data(node_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic rows, fixed per node: a logistic target of a fixed linear score."""
    generator = torch.Generator().manual_seed(node_id % 2**31)
    x = torch.randn(ROWS, FEATURES, generator=generator)
    y = (x[:, :3].sum(dim=1, keepdim=True) > 0).float()
    return x, y


def _note_pid(context: Context) -> None:
    out = Path(str(context.run_config["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    with (out / PIDS_FILE).open("a", encoding="utf-8") as file:
        file.write(f"{os.getpid()}\n")


@server.main()
def _server(grid: Grid, context: Context) -> None:
    sites = int(context.run_config["min-sites"])
    rounds = int(context.run_config["rounds"])
    out = Path(str(context.run_config["out-dir"]))
    times: list[float] = []

    def record(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        times.append(time.time())
        out.mkdir(parents=True, exist_ok=True)
        partial = out / f"{ROUNDS_FILE}.partial"  # replaced whole, never read half-written
        partial.write_text(json.dumps({"times": times}), encoding="utf-8")
        partial.replace(out / ROUNDS_FILE)
        return MetricRecord({"round": float(server_round)})

    strategy = FedAvg(min_train_nodes=sites, min_evaluate_nodes=sites, min_available_nodes=sites)
    strategy.start(
        grid,
        ArrayRecord(_model().state_dict()),
        num_rounds=rounds,
        evaluate_fn=record,
    )


@client.train()
def _train(msg: Message, context: Context) -> Message:
    _note_pid(context)
    model = _model()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    x, y = _data(context.node_id)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for start in range(0, ROWS, BATCH):  # one epoch
        optimizer.zero_grad()
        loss = loss_fn(model(x[start : start + BATCH]), y[start : start + BATCH])
        loss.backward()
        optimizer.step()
    metrics = MetricRecord({"num-examples": ROWS, "train_loss": float(loss.item())})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content, reply_to=msg)


@client.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    _note_pid(context)
    model = _model()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    x, y = _data(context.node_id)
    with torch.no_grad():
        logits = model(x)
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
        accuracy = float(((logits > 0).float() == y).float().mean())
    metrics = MetricRecord({"num-examples": ROWS, "eval_loss": loss, "eval_acc": accuracy})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def write_app(folder: Path, run_config: dict[str, Any]) -> Path:
    """A Flower App folder holding this module's source and a ``pyproject.toml`` naming it,
    with ``run_config`` as its defaults: what ``flwr run`` packs into the FAB."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stock_app.py").write_text(Path(__file__).read_text(encoding="utf-8"))
    lines = [
        "[project]",
        'name = "stock-latency"',
        'version = "1.0.0"',
        "dependencies = []  # flwr and torch are installed on every host",
        "",
        "[tool.flwr.app]",
        'publisher = "stock"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "stock_app:server"',
        'clientapp = "stock_app:client"',
        "",
        "[tool.flwr.app.config]",
        *(f"{json.dumps(key)} = {json.dumps(value)}" for key, value in sorted(run_config.items())),
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
