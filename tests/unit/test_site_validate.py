"""``fedcare site validate``: a hospital scores a signed release on its own new data, offline.

The file is written here and never given to any other command; the command runs as a real
process in which creating any socket raises (a ``sitecustomize`` on its ``PYTHONPATH``), so
"sends nothing" is checked, not assumed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.bundle import load_bundle
from fedcare.tasks import get_task
from fedcare.tasks.heart_disease import RAW_COLUMNS, read_raw
from fedcare.validation_report import validation_report
from tests.release_bundle import ReleaseKeys, make_bundle, release_key

NO_NETWORK = textwrap.dedent(
    """
    import socket

    class _NoNetwork(socket.socket):
        def __init__(self, *args, **kwargs):
            raise PermissionError("fedcare site validate must not open a socket")

    socket.socket = _NoNetwork
    socket.create_connection = _NoNetwork
    socket.socketpair = _NoNetwork
    """
)


@pytest.fixture(scope="module")
def release(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> tuple[Path, ReleaseKeys]:
    keys = release_key(tmp_path_factory.mktemp("owner"))
    bundle = make_bundle(tmp_path_factory.mktemp("release"), keys, site_paths["cleveland"])
    return bundle, keys


@pytest.fixture
def new_export(tmp_path: Path, site_paths: dict[str, Path]) -> Path:
    """A hospital's new labelled export: Hungarian and VA rows shuffled, named columns, CSV."""
    raw = np.concatenate([read_raw(site_paths["hungarian"]), read_raw(site_paths["va"])])
    rows = raw[np.random.default_rng(0).permutation(raw.shape[0])]
    path = tmp_path / "hospital" / "new-patients.csv"
    path.parent.mkdir()
    pd.DataFrame(rows, columns=list(RAW_COLUMNS)).to_csv(path, index=False)
    return path


def site_validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``fedcare site validate`` as a process that cannot open a socket."""
    guard = cwd / "no-network"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    env = os.environ | {"PYTHONPATH": str(guard), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fedcare", "site", "validate", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip


def test_the_guard_really_forbids_sockets(tmp_path: Path) -> None:
    guard = tmp_path / "no-network"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
        capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(guard)}, check=False,
    )  # fmt: skip
    assert probe.returncode != 0 and "must not open a socket" in probe.stderr


def test_a_release_is_scored_on_a_new_local_file_with_no_network(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], new_export: Path
) -> None:
    # Prepare: the numbers the report must show, computed in this process.
    bundle, keys = release
    model = load_bundle(bundle, keys.public_key)
    task = get_task("heart-disease")
    rows = task.read_labelled(new_export)
    expected = validation_report(
        rows.labels, model.predict_proba(rows.columns), task.subgroups(rows.columns)
    )

    # Execute
    result = site_validate(
        "--bundle", str(bundle), "--key", str(keys.public_key), "--data", str(new_export),
        cwd=tmp_path,
    )  # fmt: skip

    # Assert: it succeeded without a socket, and printed the same report (each reported cell
    # with its AUROC and interval) and the suppressed cell, and says nothing was sent.
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{rows.n} complete rows scored" in out and "nothing was sent" in out
    for cell in ("all", "sex=female", "sex=male", "age=<50", "age=50-64", "age=65+"):
        if f"{cell}/auroc" in expected:
            line = next(line for line in out.splitlines() if line.strip().startswith(cell + " "))
            low, high = expected[f"{cell}/auroc-ci-low"], expected[f"{cell}/auroc-ci-high"]
            assert f"{expected[f'{cell}/auroc']:.2f}" in line and f"{low:.2f}-{high:.2f}" in line
            assert f"~{expected[f'{cell}/patients']:.0f}" in line
        else:
            assert cell in out.split("not reported")[1]


def test_a_file_without_the_label_is_refused_in_one_line(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], new_export: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(new_export).drop(columns=["num"]).to_csv(unlabelled, index=False)
    bundle, keys = release
    result = site_validate(
        "--bundle", str(bundle), "--key", str(keys.public_key), "--data", str(unlabelled),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "num" in result.stderr, result.stderr


def test_a_release_signed_by_another_key_is_refused(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], new_export: Path
) -> None:
    other = release_key(tmp_path / "someone-else")
    bundle, _ = release
    result = site_validate(
        "--bundle", str(bundle), "--key", str(other.public_key), "--data", str(new_export),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0


def test_a_site_validating_scores_exactly_as_the_released_model_serves(
    tmp_path: Path, release: tuple[Path, ReleaseKeys], site_paths: dict[str, Path]
) -> None:
    # Prepare: the release's weights and statistics, sent as a query.validate would send them.
    from flwr.app import ArrayRecord, ConfigRecord

    from fedcare import messages as keys
    from fedcare.client.site import resolve_site
    from fedcare.client.validation import ValidationRequest, score_test_rows
    from tests.flower_harness import site_context

    bundle, owner = release
    released = load_bundle(bundle, owner.public_key)
    request = ValidationRequest.from_record(
        ConfigRecord(
            {
                keys.TASK: released.task, keys.MODEL: released.model_name,
                keys.SEED: int(released.preprocessing["seed"]),
                keys.PREPROCESSING_MEAN: [float(v) for v in released.mean],
                keys.PREPROCESSING_STD: [float(v) for v in released.std],
                keys.MIN_SUBGROUP_PATIENTS: 20, keys.MIN_SUBGROUP_EVENTS: 5,
            }
        )
    )  # fmt: skip
    site = resolve_site(site_context("va", site_paths["va"], tmp_path))
    arrays = ArrayRecord(released.module.state_dict())

    # Execute
    _, probability, _ = score_test_rows(request, site, arrays)
    _, test = get_task("heart-disease").split_labelled("va", site_paths["va"])

    # Assert: the site's validation and the API give the same probabilities for the same rows.
    assert np.allclose(probability, released.predict_proba(test.columns), atol=1e-6)
