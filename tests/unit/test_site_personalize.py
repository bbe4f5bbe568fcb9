"""``fedcare site personalize``: a deployed site adapts a signed release to its own rows and
prints its own comparison, sending nothing (issue #13 item 2).

The release is a real signed bundle (``tests/release_bundle.py``); the site's file is the
Cleveland hospital's rows as a named-column CSV. One test runs the command as a process that
cannot open a socket; the others run it in this process (faster) and read what it left in the
site's state folder: the personalized model, its JSON record, the ledger and the audit log.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import Result
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from fedcare.bundle import load_bundle
from fedcare.cli import app
from fedcare.client.audit import audit_log, refusal_entry
from fedcare.config import AccountantName
from fedcare.errors import ExitCode
from fedcare.personalization import VALIDATION_FRACTION, split_validation
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import DpRequest, plan_round
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import ModelName, get_task
from fedcare.tasks.heart_disease import RAW_COLUMNS, read_raw
from fedcare.weights import read_weights
from tests.release_bundle import ReleaseKeys, make_bundle, release_key
from tests.unit.test_site_validate import NO_NETWORK

TASK = get_task("heart-disease")
SITE = "cleveland"
SAVED = "personalized/heart-risk-v7"  # the bundle's card: name heart-risk, version v7
NOISE = 1.0
BATCH = 8


@pytest.fixture(autouse=True, scope="module")
def _restore_threads() -> Iterator[None]:
    """The command sets torch to one thread (tiny models); give the test process its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def release(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> tuple[Path, ReleaseKeys]:
    keys = release_key(tmp_path_factory.mktemp("owner"))
    bundle = make_bundle(tmp_path_factory.mktemp("release"), keys, site_paths[SITE], "logreg")
    return bundle, keys


@pytest.fixture(scope="module")
def site_file(tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]) -> Path:
    """The hospital's export: every row of its file, named columns, CSV."""
    path = tmp_path_factory.mktemp("hospital") / "patients.csv"
    raw = read_raw(site_paths[SITE])
    pd.DataFrame(raw, columns=list(RAW_COLUMNS)).to_csv(path, index=False)
    return path


def personalize(release: tuple[Path, ReleaseKeys], data: Path, state: Path, *extra: str) -> Result:
    bundle, keys = release
    return CliRunner().invoke(
        app,
        [
            "site", "personalize", "--bundle", str(bundle), "--key", str(keys.public_key),
            "--data", str(data), "--state", str(state), "--name", SITE, *extra,
        ],
    )  # fmt: skip


def table(stdout: str) -> dict[str, list[str]]:
    """The comparison table's rows: model -> [accuracy, AUROC] as printed."""
    models = ("local-only", "global", "personalized")
    cells = [line.split() for line in stdout.splitlines()]
    return {c[0]: c[1:] for c in cells if len(c) == 3 and c[0] in models}


def record(state: Path) -> dict[str, object]:
    return dict(json.loads((state / f"{SAVED}.json").read_text()))


def test_the_comparison_prints_and_the_model_stays_at_the_site_with_no_network(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    # Prepare: the global model's figures on the test rows, the way the release serves it
    # (raw values through ReleasedModel.predict_proba), computed here
    bundle, keys = release
    released = load_bundle(bundle, keys.public_key)
    _, test = TASK.split_labelled(SITE, site_file)
    probability = released.predict_proba(test.columns)
    global_accuracy = float(((probability > 0.5) == test.labels).mean())
    global_auroc = float(roc_auc_score(test.labels, probability))
    guard = tmp_path / "no-network"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    state = tmp_path / "site"

    # Execute: the real command, as a process in which opening a socket raises
    done = subprocess.run(
        [
            sys.executable, "-m", "fedcare", "site", "personalize", "--bundle", str(bundle),
            "--key", str(keys.public_key), "--data", str(site_file), "--state", str(state),
            "--name", SITE, "--no-dp", "--allow-non-dp",
        ],
        capture_output=True, text=True, timeout=300, check=False,
        env=os.environ | {"PYTHONPATH": str(guard), "COLUMNS": "200"},
    )  # fmt: skip

    # Assert: the table, the global row equal to the release's own predictions, the model
    # saved at the site with the printed sha256, and the last line
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"site {SITE}: heart-risk v7 on its own {test.n} test rows" in lines[0]
    rows = table(done.stdout)
    assert rows["global"] == [f"{global_accuracy:.3f}", f"{global_auroc:.3f}"]
    for label in ("local-only", "personalized"):
        assert all(0.0 <= float(v) <= 1.0 for v in rows[label]), rows[label]
    weights = state / f"{SAVED}.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert f"saved at {weights} (sha256 {digest})" in done.stdout
    model = TASK.build_model(ModelName(released.model_name), seed=0)
    model.load_state_dict(read_weights(weights), strict=True)  # a model of the release's kind
    saved = record(state)
    assert saved["weights_sha256"] == digest
    assert saved["test"]["global"] == pytest.approx(  # type: ignore[index]
        {"accuracy": global_accuracy, "auroc": global_auroc}, abs=1e-6
    )
    assert "chosen: " in done.stdout and "nothing spent on the ledger" in done.stdout
    assert lines[-1].startswith("nothing was sent")
    assert not (state / "privacy-ledger.jsonl").exists()


def corrupt_test_labels(site_file: Path, out: Path) -> int:
    """The same file with the labels of test rows wrong, the split unchanged: each test row
    with label 0 trades every column but the label with one of label 1 (the label column, the
    one the split stratifies on, stays as it was, so the fixed split picks the same rows).
    Returns how many test rows now carry a wrong label."""
    frame = pd.read_csv(site_file)
    complete = frame.dropna(subset=[c for c in frame.columns if c not in ("ca", "thal", "slope")])
    rows = TASK.read_labelled(site_file)
    assert rows.n == len(complete)
    from fedcare.tasks.heart_disease import split_indices

    _, test = split_indices(rows.labels)
    where = complete.index.to_numpy()[test]
    zeros = [w for w, y in zip(where, rows.labels[test], strict=True) if y == 0]
    ones = [w for w, y in zip(where, rows.labels[test], strict=True) if y == 1]
    features = [c for c in frame.columns if c != "num"]
    pairs = list(zip(zeros, ones, strict=False))
    for a, b in pairs:
        first = frame.loc[a, features].copy()
        frame.loc[a, features] = frame.loc[b, features].to_numpy()
        frame.loc[b, features] = first.to_numpy()
    frame.to_csv(out, index=False)
    return 2 * len(pairs)


def test_tuning_reads_only_the_validation_part_of_the_training_rows(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    # Prepare: a copy of the file whose test rows carry wrong labels; its training rows (and
    # so the validation part) are exactly the original's
    corrupted = tmp_path / "corrupted.csv"
    wrong = corrupt_test_labels(site_file, corrupted)
    assert wrong >= 40
    train, test = TASK.split_labelled(SITE, site_file)
    train_c, test_c = TASK.split_labelled(SITE, corrupted)
    np.testing.assert_array_equal(train.labels, train_c.labels)
    for name, values in train.columns.items():
        np.testing.assert_array_equal(values, train_c.columns[name])
    assert any(not np.array_equal(v, test_c.columns[k]) for k, v in test.columns.items())

    # Execute
    clean = personalize(release, site_file, tmp_path / "a", "--no-dp", "--allow-non-dp")
    dirty = personalize(release, corrupted, tmp_path / "b", "--no-dp", "--allow-non-dp")

    # Assert: the same setting, validation scores and weights; only the test figures moved
    assert clean.exit_code == 0 and dirty.exit_code == 0, (clean.output, dirty.output)
    a, b = record(tmp_path / "a"), record(tmp_path / "b")
    assert a["chosen"] == b["chosen"] and a["validation"] == b["validation"]
    assert a["chosen"]["method"] != "global"  # type: ignore[index]  # something was tuned
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["test"]["global"] != b["test"]["global"]  # type: ignore[index]
    assert a["test"]["personalized"] != b["test"]["personalized"]  # type: ignore[index]


def prior_event(state: Path, epsilon_steps: int = 40) -> PrivacyEvent:
    """A federated round already in the site's ledger (so ε before is not 0)."""
    event = PrivacyEvent(
        "fed-run", 1, NOISE, 0.05, epsilon_steps, 1e-5, 1.0, "2026-01-01T00:00:00Z"
    )
    PrivacyLedger(state).append(event)
    return event


def test_with_dp_every_personalization_training_is_in_the_ledger_and_in_epsilon(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    # Prepare: a site that already took part in a federated round
    state = tmp_path / "site"
    before = prior_event(state)
    train, _ = TASK.split_labelled(SITE, site_file)
    delta = default_delta(train.n)

    # Execute: DP by default (the site's policy requires it)
    done = personalize(release, site_file, state)

    # Assert: the new events are this personalization's (its run id, rounds 1..k), k equal to
    # the trainings it reports; ε before/after are the ledger's without/with them
    assert done.exit_code == 0, done.output
    events = PrivacyLedger(state).read()
    assert events[0] == before
    spent = record(state)["privacy"]
    assert isinstance(spent, dict)
    ours = events[1:]
    assert {e.run_id for e in ours} == {spent["run_id"]} and spent["run_id"].startswith(
        "personalize-"
    )
    assert [e.round for e in ours] == spent["rounds"] == list(range(1, len(ours) + 1))
    assert len(ours) in (2, 3)  # two DP candidates, and the refit unless global was kept
    assert all(e.noise_multiplier == NOISE and e.steps > 0 for e in ours)
    assert spent["delta"] == delta
    assert spent["epsilon_before"] == epsilon_from_events([before], delta, AccountantName.RDP)
    assert spent["epsilon_after"] == epsilon_from_events(events, delta, AccountantName.RDP)
    assert spent["epsilon_before"] < spent["epsilon_after"] <= 10.0
    line = next(line for line in done.stdout.splitlines() if line.startswith("privacy:"))
    assert f"{len(ours)} DP-SGD training(s)" in line
    assert f"epsilon {spent['epsilon_before']:.3f} -> {spent['epsilon_after']:.3f}" in line
    assert (
        table(done.stdout)["local-only"] == ["-", "-"]
        and "local-only: left out under DP" in done.stdout
    )


def first_training_event(site_file: Path) -> PrivacyEvent:
    """The ledger event of the first DP candidate (fine-tune 1 epoch on the fit part)."""
    train, _ = TASK.split_labelled(SITE, site_file)
    fit, _ = split_validation(train.labels.astype(np.float32), VALIDATION_FRACTION, seed=0)
    request = DpRequest(0.0, NOISE, 1.0, 1, AccountantName.RDP)
    plan = plan_round(request, fit.size, BATCH, 1, default_delta(train.n))
    return PrivacyEvent(
        "p", 1, plan.noise_multiplier, plan.sample_rate, plan.steps, plan.delta, 1.0, "t"
    )


def test_an_exhausted_budget_refuses_every_training_and_the_ledger_is_not_exceeded(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    # Prepare: a budget the federated round already nearly spent: the first personalization
    # training would take it over
    state = tmp_path / "site"
    before = prior_event(state)
    delta = default_delta(TASK.split_labelled(SITE, site_file)[0].n)
    spent = epsilon_from_events([before], delta)
    with_first = epsilon_from_events([before, first_training_event(site_file)], delta)
    budget = (spent + with_first) / 2

    # Execute
    done = personalize(release, site_file, state, "--max-epsilon", str(budget))

    # Assert: refused in one line (privacy exit code); nothing trained, saved or logged
    assert done.exit_code == int(ExitCode.PRIVACY), done.output
    assert done.stderr.strip().count("\n") == 0 and "privacy budget" in done.stderr
    assert PrivacyLedger(state).read() == (before,)
    assert not (state / "personalized").exists()
    assert not (state / "audit-log.jsonl").exists()


def test_a_budget_that_runs_out_midway_stops_there_without_exceeding_it(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    # Prepare: room for the first DP candidate (1 epoch) but not the second (3 epochs)
    state = tmp_path / "site"
    delta = default_delta(TASK.split_labelled(SITE, site_file)[0].n)
    first = first_training_event(site_file)
    second = PrivacyEvent(
        "p", 2, first.noise_multiplier, first.sample_rate, 3 * first.steps, delta, 1.0, "t"
    )
    alone = epsilon_from_events([first], delta)
    budget = (alone + epsilon_from_events([first, second], delta)) / 2

    # Execute
    done = personalize(release, site_file, state, "--max-epsilon", str(budget))

    # Assert: one training spent, ε within the budget, the stop said and recorded
    assert done.exit_code == 0, done.output
    events = PrivacyLedger(state).read()
    assert len(events) == 1 and events[0].steps == first.steps
    assert epsilon_from_events(events, delta) <= budget
    assert "stopped by the privacy budget after 1 training(s)" in done.stderr
    assert record(state)["chosen"]["stopped"] == "budget"  # type: ignore[index]


def test_the_audit_log_gains_exactly_one_personalization_entry_that_verifies(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    # Prepare: a site whose audit log already holds an entry
    state = tmp_path / "site"
    state.mkdir()
    refusal_entry(state, "earlier-run", "0" * 64)

    # Execute
    done = personalize(release, site_file, state)

    # Assert: one more entry, chained; it names the release, the setting, the ledger events,
    # the saved file's sha256, and that nothing was sent
    assert done.exit_code == 0, done.output
    entries = audit_log(state).read()  # verifies the chain
    assert len(entries) == 2 and entries[0]["kind"] == "refused-app"
    entry = entries[1]
    saved = record(state)
    privacy = saved["privacy"]
    assert isinstance(privacy, dict)
    assert entry["kind"] == "personalization" and entry["sent"] == "nothing"
    assert entry["release"] == saved["release"]
    assert entry["release"]["name"] == "heart-risk" and entry["release"]["version"] == "v7"
    assert entry["chosen"] == saved["chosen"]
    assert entry["ledger_events"] == [
        {"run_id": privacy["run_id"], "round": r} for r in privacy["rounds"]
    ]
    weights = state / f"{SAVED}.safetensors"
    assert entry["saved"] == {
        "file": f"{SAVED}.safetensors",
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    verified = CliRunner().invoke(app, ["site", "audit", "--state", str(state), "--verify"])
    assert verified.exit_code == 0 and "2 entries, hash chain verified" in verified.stdout
    shown = CliRunner().invoke(app, ["site", "audit", "--state", str(state)]).stdout
    assert f"personalized heart-risk v7 here ({entry['chosen']['method']};" in shown


def test_no_dp_is_refused_where_the_site_policy_requires_dp(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    done = personalize(release, site_file, tmp_path / "site", "--no-dp")
    assert done.exit_code == int(ExitCode.CONFIG)
    assert done.stderr.strip().count("\n") == 0 and "--no-dp" in done.stderr
    assert "--allow-non-dp" in done.stderr
    assert not (tmp_path / "site").exists()


def test_a_file_the_release_refuses_is_named_in_one_line(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(site_file).drop(columns=["num"]).to_csv(unlabelled, index=False)
    done = personalize(release, unlabelled, tmp_path / "site")
    assert done.exit_code == int(ExitCode.DATA), done.output
    assert done.stderr.strip().count("\n") == 0 and str(unlabelled) in done.stderr
    assert "num" in done.stderr and not (tmp_path / "site").exists()


def test_a_release_signed_by_another_key_is_refused(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_file: Path
) -> None:
    other = release_key(tmp_path / "someone-else")
    done = personalize((release[0], other), site_file, tmp_path / "site")
    assert done.exit_code != 0 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and not (tmp_path / "site").exists()


def test_the_site_side_imports_neither_the_server_nor_the_simulations() -> None:
    code = (
        "import sys, fedcare.client.personalize\n"
        "banned = ('fedcare.server', 'fedcare.simulations')\n"
        "bad = [m for m in sys.modules if m.startswith(banned)]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
