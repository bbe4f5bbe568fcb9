"""The privacy and safety promises an independent review found unguarded (issue #21).

Each test states one promise the README makes and fails when a one-line bug breaks it: the
review planted each bug and the suite did not notice. Where a reference is needed it is an
independent one (dp-accounting for ε, scipy for the trimmed mean, Flower's own argument parser
for the SuperLink command, a chained log built here by hand with hashlib).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import rdp
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.proto.task_pb2 import Task
from scipy.stats import trim_mean
from torch import nn

from fedcare import messages as keys
from fedcare.chained_log import GENESIS, ChainBrokenError, ChainedJsonLog
from fedcare.client.app import app
from fedcare.client.audit import audit_log
from fedcare.client.executor import refuse_clientapp
from fedcare.client.executor import settings as site_executor_settings
from fedcare.client.request import RoundRequest
from fedcare.config import AccountantName, RunConfig, StrategyName, Weighting
from fedcare.datagate import ColumnRule, TableSchema, read_site_table
from fedcare.deidentify import find_identifiers, identifier_by_name
from fedcare.errors import DataError
from fedcare.privacy.accounting import default_delta, poisson_sample_rate
from fedcare.privacy.budget import DpRequest, check_budget, plan_round
from fedcare.privacy.dp_sgd import DpSgdSettings, train_dp_sgd
from fedcare.privacy.errors import BudgetExceededError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.server.coordinator import superlink_argv
from fedcare.server.strategies import build_strategy
from fedcare.server.validation import UpdateRules
from fedcare.tasks import get_task
from fedcare.training import LocalTrainingPlan, train_local
from tests.flower_harness import site_context, train_message

logging.getLogger("absl").setLevel(logging.ERROR)


def _rdp_epsilon(sigma: float, rate: float, steps: int, delta: float) -> float:
    """dp-accounting's RDP ε of ``steps`` Poisson-subsampled Gaussian steps."""
    accountant = rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    return float(accountant.get_epsilon(delta))


def _event(sigma: float, rate: float, steps: int, delta: float, round_: int = 1) -> PrivacyEvent:
    return PrivacyEvent("run", round_, sigma, rate, steps, delta, 1.0, "2026-01-01T00:00:00Z")


# --- DP-SGD and the budget ---------------------------------------------------------------------


def test_dp_sgd_adds_exactly_the_calibrated_noise() -> None:
    # Prepare: all-zero inputs make every per-sample gradient zero, so the weights move by the
    # noise alone: each step adds N(0, (σ·C)²) per coordinate, divided by the expected batch B.
    sigma, clip, lr, rows, rate = 1.3, 0.7, 1.0, 64, 1 / 8
    model = nn.Linear(20000, 1, bias=False)
    nn.init.zeros_(model.weight)
    x = np.zeros((rows, 20000), dtype=np.float32)
    y = np.zeros(rows, dtype=np.float32)
    settings = DpSgdSettings(sigma, clip, rate, epochs=1, learning_rate=lr)
    # Execute
    result = train_dp_sgd(model, nn.MSELoss(), x, y, settings)
    # Assert: the root mean square of 20,000 N(0, s²) values estimates s with relative standard
    # error 1/sqrt(2·20000) = 0.5 %; a 3 % band is 6 standard errors: a false failure has
    # probability about 2e-9 (the noise comes from OS entropy, so it cannot be seeded).
    expected_batch = rows * rate
    expected_std = lr * sigma * clip * math.sqrt(result.steps) / expected_batch
    measured = float(model.weight.detach().double().pow(2).mean().sqrt())
    assert result.steps == 8
    assert measured == pytest.approx(expected_std, rel=0.03)


def test_the_budget_check_uses_the_sites_delta() -> None:
    # Prepare: δ = 1e-7, far from any default; ε is recomputed by dp-accounting at that δ.
    delta, sigma, rate, steps = 1e-7, 1.1, 0.1, 40
    history = [_event(sigma, rate, steps, delta, 1)]
    planned = _event(sigma, rate, steps, delta, 2)
    reference = _rdp_epsilon(sigma, rate, 2 * steps, delta)
    # Execute
    after = check_budget(history, planned, delta, 100.0, AccountantName.RDP)
    # Assert: the same ε, and a budget a hair under it refuses the round
    assert after == pytest.approx(reference, rel=0.02)
    with pytest.raises(BudgetExceededError):
        check_budget(history, planned, delta, after * 0.999, AccountantName.RDP)


def test_a_site_checks_its_budget_at_its_own_policy_delta(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: the site's policy sets δ = 1e-9, stricter than the default; its max-epsilon lies
    # between ε at the default δ and ε at its own δ, so only its own δ refuses the round.
    config = RunConfig(dp=True, noise_multiplier=1.0, rounds=3)
    data = get_task(config.task).load_site("va", site_paths["va"])
    rate = poisson_sample_rate(data.n_train, config.batch_size)
    steps = config.local_epochs * round(1 / rate)
    own = _rdp_epsilon(1.0, rate, steps, 1e-9)
    default = _rdp_epsilon(1.0, rate, steps, default_delta(data.n_train))
    assert default < own
    policy = {"max-epsilon": math.sqrt(default * own), "delta": 1e-9}
    context = site_context("va", site_paths["va"], tmp_path, **policy)
    # Execute
    reply = app(train_message(config, 1), context)
    # Assert
    assert reply.has_error()
    assert reply.error.reason == keys.REFUSED_BUDGET
    assert PrivacyLedger(tmp_path).read() == ()


def test_planned_dp_steps_are_the_steps_dp_sgd_takes() -> None:
    # Prepare: 90 rows in batches of 16 is a rate of 1/6; two local epochs are 12 steps.
    rows, batch, epochs, delta = 90, 16, 2, 1e-5
    request = DpRequest(3.0, 0.0, 1.0, 4, AccountantName.RDP)
    x = np.random.default_rng(0).normal(size=(rows, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    # Execute
    plan = plan_round(request, rows, batch, epochs, delta)
    taken = train_dp_sgd(
        nn.Linear(3, 1), nn.BCEWithLogitsLoss(), x, y,
        DpSgdSettings(plan.noise_multiplier, 1.0, plan.sample_rate, epochs, 0.1),
    )  # fmt: skip
    # Assert: the steps budgeted are the steps trained, and σ spends exactly the target ε over
    # the planned rounds (dp-accounting as the reference)
    assert plan.steps == epochs * math.ceil(rows / batch) == taken.steps == 12
    spent = _rdp_epsilon(plan.noise_multiplier, plan.sample_rate, plan.steps * 4, delta)
    assert spent == pytest.approx(3.0, rel=0.02)


# --- the chained log ---------------------------------------------------------------------------


def _hand_built_log(folder: Path, entries: list[dict[str, object]]) -> ChainedJsonLog:
    """A log and head written here, with hashlib, to the documented format."""
    previous, lines = GENESIS, []
    for entry in entries:
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        previous = hashlib.sha256((previous + canonical).encode()).hexdigest()
        lines.append(json.dumps({**entry, "chain": previous}, sort_keys=True))
    (folder / "log.jsonl").write_text("".join(line + "\n" for line in lines))
    (folder / "log.head.json").write_text(json.dumps({"entries": len(entries), "chain": previous}))
    return ChainedJsonLog(folder / "log.jsonl", folder / "log.head.json")


def test_an_edit_to_the_last_line_of_a_chained_log_is_detected(tmp_path: Path) -> None:
    # Prepare
    log = _hand_built_log(tmp_path, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert log.read() == [{"n": 1}, {"n": 2}, {"n": 3}]
    lines = log.path.read_text().splitlines()
    lines[-1] = lines[-1].replace('"n": 3', '"n": 4')  # its chain value left as it was
    log.path.write_text("".join(line + "\n" for line in lines))
    # Execute / Assert
    with pytest.raises(ChainBrokenError, match="line 3"):
        log.read()


def test_a_chained_log_replaced_by_another_valid_chain_disagrees_with_its_head(
    tmp_path: Path,
) -> None:
    # Prepare: a whole new, internally valid log of the same length beside the old head
    original = _hand_built_log(tmp_path, [{"n": 1}, {"n": 2}])
    head = original.head_path.read_text()
    forged = _hand_built_log(tmp_path, [{"n": 1}, {"n": 5}])
    forged.head_path.write_text(head)
    # Execute / Assert
    with pytest.raises(ChainBrokenError, match="head's hash"):
        forged.read()


# --- update validation and robust aggregation --------------------------------------------------


def _arrays(values: np.ndarray) -> ArrayRecord:
    return ArrayRecord({"w": Array(values)})


def _update(global_arrays: dict[str, np.ndarray], delta: np.ndarray) -> RecordDict:
    return RecordDict(
        {
            keys.ARRAYS: _arrays(global_arrays["w"] + delta.astype(np.float32)),
            keys.METRICS: MetricRecord({keys.TRAIN_LOSS: 0.5, keys.WEIGHT: 1.0}),
        }
    )


GLOBAL = {"w": np.zeros(10, dtype=np.float32)}


def test_an_update_with_a_single_nan_or_inf_is_rejected() -> None:
    # Prepare
    rules = UpdateRules(0.0, Weighting.UNIFORM, dp=False)
    for bad in (math.nan, math.inf):
        delta = np.full(10, 0.01)
        delta[3] = bad  # one value of ten
        # Execute
        reason = rules.check(_update(GLOBAL, delta), _arrays(GLOBAL["w"]))
        # Assert
        assert reason is not None and "NaN or Inf" in reason


def test_the_update_norm_bound_is_exactly_the_configured_bound() -> None:
    # Prepare: updates of L2 norm 1.01 and 0.99 times the bound of 2.0
    rules = UpdateRules(2.0, Weighting.UNIFORM, dp=False)
    direction = np.ones(10) / math.sqrt(10)
    # Execute
    over = rules.check(_update(GLOBAL, direction * 2.0 * 1.01), _arrays(GLOBAL["w"]))
    under = rules.check(_update(GLOBAL, direction * 2.0 * 0.99), _arrays(GLOBAL["w"]))
    # Assert
    assert over is not None and "exceeds the bound 2" in over
    assert under is None


def _replies(values: list[float]) -> list[Message]:
    instruction = train_message(RunConfig(rounds=1), 1)
    return [
        Message(
            RecordDict(
                {
                    keys.ARRAYS: _arrays(np.full(3, v, dtype=np.float32)),
                    keys.METRICS: MetricRecord({keys.TRAIN_LOSS: 0.1, keys.WEIGHT: 1.0}),
                }
            ),
            reply_to=instruction,
        )
        for v in values
    ]


def test_trimmed_mean_cuts_the_configured_share_of_sites_at_each_end() -> None:
    # Prepare: eight sites, one wild; trim 0.25 cuts two sites at each end
    values = [1.0, 1.1, 0.9, 1.2, 0.8, 1.05, 0.95, 500.0]
    config = RunConfig(strategy=StrategyName.FEDTRIMMEDAVG, trim_fraction=0.25)
    strategy = build_strategy(config, min_sites=8)
    # Execute
    arrays, _ = strategy.aggregate_train(1, _replies(values))
    # Assert: scipy's trimmed mean is the reference; the wild site moves it nowhere near a mean
    assert arrays is not None
    result = arrays["w"].numpy()
    np.testing.assert_allclose(result, trim_mean(values, 0.25), rtol=1e-6)
    assert abs(float(result[0]) - 1.0) < 0.05


class _Sites:
    """The SuperLink's list of connected sites, as a strategy asks for it (nothing else)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.count + 1))


def test_fedprox_sends_every_site_the_configured_proximal_mu() -> None:
    # Prepare
    config = RunConfig(strategy=StrategyName.FEDPROX, proximal_mu=0.3)
    strategy = build_strategy(config, min_sites=2)
    model = get_task(config.task).build_model(config.model, seed=config.seed)
    train_message(config, 1)  # sets up Flower's task identity for server-side messages
    from fedcare.server.app import request_config

    # Execute
    messages = list(
        strategy.configure_train(
            1, ArrayRecord(model.state_dict()), ConfigRecord(request_config(config)), _Sites(2)
        )
    )
    # Assert: what each site reads from its instruction is the configured μ
    assert len(messages) == 2
    for message in messages:
        request = RoundRequest.from_record(message.content[keys.CONFIG])
        assert request.proximal_mu == pytest.approx(0.3)


def test_a_sites_fedprox_step_adds_the_proximal_gradient() -> None:
    # Prepare: a linear model, four rows, one batch per step, three steps from an anchor
    torch.manual_seed(0)
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.float32)
    model = nn.Linear(3, 1)
    anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mu, lr, steps = 0.5, 0.2, 3
    plan = LocalTrainingPlan(epochs=steps, batch_size=4, learning_rate=lr, seed=0, proximal_mu=mu)
    # Execute
    train_local(model, nn.BCEWithLogitsLoss(), x, y, plan, anchor)
    # Assert: a hand-written SGD on loss + μ/2·||w - w0||² (the full batch each step)
    weight, bias = anchor["weight"].clone(), anchor["bias"].clone()
    features, labels = torch.from_numpy(x), torch.from_numpy(y).reshape(-1, 1)
    for _ in range(steps):
        weight.requires_grad_(True)
        bias.requires_grad_(True)
        loss = nn.functional.binary_cross_entropy_with_logits(features @ weight.T + bias, labels)
        gw, gb = torch.autograd.grad(loss, [weight, bias])
        with torch.no_grad():
            weight = weight - lr * (gw + mu * (weight - anchor["weight"]))
            bias = bias - lr * (gb + mu * (bias - anchor["bias"]))
    torch.testing.assert_close(model.weight.detach(), weight.detach())
    torch.testing.assert_close(model.bias.detach(), bias.detach())


# --- the data gate and the de-identification guard ----------------------------------------------

SCHEMA = TableSchema(
    columns=(
        ColumnRule("age", 0, 120),
        ColumnRule("outcome", 0, 1, levels=(0, 1)),  # missing_allowed left at its default
    ),
    label="outcome",
    min_rows=2,
)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.csv"
    path.write_text(text)
    return path


def test_the_data_gate_refuses_a_missing_label_even_where_missing_values_are_allowed(
    tmp_path: Path,
) -> None:
    # Prepare
    path = _csv(tmp_path, "age,outcome\n50,1\n61,0\n47,?\n")
    # Execute / Assert
    with pytest.raises(DataError, match="column 'outcome': 1 missing value"):
        read_site_table(path, SCHEMA)


def test_the_data_gate_refuses_a_label_with_a_single_class(tmp_path: Path) -> None:
    # Prepare
    path = _csv(tmp_path, "age,outcome\n50,1\n61,1\n47,1\n")
    # Execute / Assert
    with pytest.raises(DataError, match="every row is positive; training needs both classes"):
        read_site_table(path, SCHEMA)


@pytest.mark.parametrize(
    "column", ["MRN", "Medical Record Number", "record_no", "chart_number", "encounter_id"]
)
def test_a_column_named_like_a_record_number_is_an_identifier(column: str) -> None:
    assert identifier_by_name(column) == "a record number or identifier"


def test_an_ignored_column_named_like_a_record_number_is_refused(tmp_path: Path) -> None:
    # Prepare: small, harmless-looking values, so only its name gives it away
    path = _csv(tmp_path, "age,outcome,MRN\n50,1,1\n61,0,2\n47,1,3\n")
    # Execute / Assert
    with pytest.raises(DataError, match=r"'MRN' .*looks like a record number or identifier"):
        read_site_table(path, SCHEMA, ignore_columns=("MRN",))


def test_a_column_of_zip_codes_is_an_identifier() -> None:
    # Prepare: a column of plain 5-digit ZIPs, and one ZIP+4 among harmless codes
    columns = {
        "home": ["10001", "94110", "60614", "30301", "73301"],
        "code": ["a", "b", "10001-1234", "c", "d"],
    }
    # Execute
    findings = {f.column: f.why for f in find_identifiers(columns, numeric_columns=())}
    # Assert
    assert findings.get("home", "not flagged").startswith("ZIP codes")
    assert findings.get("code", "not flagged").startswith("ZIP codes")


# --- the site's executor and the coordinator's SuperLink ---------------------------------------


@pytest.fixture
def runtime_api_that_answers_404() -> Iterator[str]:
    """A loopback HTTP server standing where the SuperNode's Runtime API would be; it answers
    every call with 404, so the executor's reply to the refused task fails at once."""

    class _NotFound(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_app_is_written_to_the_sites_audit_log(
    tmp_path: Path, runtime_api_that_answers_404: str
) -> None:
    # Prepare: the site executor's real refusal path and the site's real audit log on disk
    settings = site_executor_settings(
        runtime_api_that_answers_404, tmp_path / "superexec.secret", tmp_path, ("a" * 64,)
    )
    refuse = refuse_clientapp(settings)
    # Execute
    refuse(Task(run_id=42, fab_hash="b" * 64), "token")
    # Assert
    entries = audit_log(tmp_path).read()
    assert len(entries) == 1, "the refusal left no entry in the audit log"
    entry = entries[0]
    assert entry["kind"] == "refused-app"
    assert entry["run_id"] == "42"
    assert entry["fab_hash"] == "b" * 64


def test_a_superlink_is_never_started_without_site_authentication(tmp_path: Path) -> None:
    # Prepare
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    # Execute
    argv = superlink_argv(tmp_path, 9092, tmp_path / "superexec.secret")
    parsed = _parse_args_run_superlink().parse_args(argv[1:])
    # Assert: as Flower itself reads the command line
    assert argv[0] == "flower-superlink"
    assert parsed.enable_supernode_auth is True
    assert parsed.insecure is False
    assert parsed.ssl_certfile and parsed.ssl_keyfile and parsed.ssl_ca_certfile
    assert parsed.isolation == "process"
    assert parsed.superexec_auth_secret_file == str((tmp_path / "superexec.secret").resolve())
