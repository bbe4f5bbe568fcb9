"""Stock Flower for the latency baseline: Flower's FedAvg and a ClientApp that trains nothing.

It measures what Flower's own deployment machinery costs per round (polling, one
``flwr-clientapp`` process per message, TLS) with no fedcare code and no torch in the loop.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

server = ServerApp()
client = ClientApp()


@server.main()
def _server(grid: Grid, context: Context) -> None:
    sites = int(context.run_config["min-sites"])
    rounds = int(context.run_config["rounds"])
    out = Path(str(context.run_config["out-dir"]))
    times: list[float] = [time.time()]

    def record(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        times.append(time.time())
        out.mkdir(parents=True, exist_ok=True)
        (out / "stock_rounds.json").write_text(json.dumps({"times": times[1:]}))
        return MetricRecord({"round": float(server_round)})

    strategy = FedAvg(min_train_nodes=sites, min_evaluate_nodes=sites, min_available_nodes=sites)
    strategy.start(
        grid,
        ArrayRecord([np.zeros(14, dtype=np.float32)]),
        num_rounds=rounds,
        evaluate_fn=record,
    )


@client.train()
def _train(msg: Message, context: Context) -> Message:
    arrays = msg.content.array_records["arrays"]
    metrics = MetricRecord({"num-examples": 1})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@client.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 1, "loss": 0.0})
    content = RecordDict({"metrics": metrics, "config": ConfigRecord({})})
    return Message(content, reply_to=msg)
