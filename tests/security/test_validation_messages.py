"""Issue #10: what a site sends during cross-site validation, read back from its audit log.

The coordinator's two queries are run through the real ClientApp (its audit mod records each
reply before it leaves): first ``query.feature_stats``, whose noised sums are combined as the
coordinator combines them, then ``query.validate`` with those statistics. The audit log must show
no prediction, no per-patient value, no exact count and no cell below the minimum size, even when
the coordinator asks for a one-patient minimum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcare import messages as keys
from fedcare.client.app import app
from fedcare.client.audit import audit_log
from fedcare.client.site import SiteIdentity, resolve_site
from fedcare.client.validation import ValidationRequest, score_test_rows
from fedcare.feature_stats import combine_for_task, exact_sums
from fedcare.tasks import ModelName, get_task
from tests.flower_harness import site_context

TASK = "heart-disease"
SITES = ("hungarian", "va")


def query(message_type: str, config: dict, arrays: ArrayRecord | None = None) -> Message:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    content = RecordDict({keys.CONFIG: ConfigRecord(config)})
    if arrays is not None:
        content[keys.ARRAYS] = arrays
    return Message(content, dst_node_id=1, message_type=message_type)


def sent(state: Path, message_type: str) -> list[dict]:
    """The audit log's entries for ``message_type`` (the chain verified by reading it)."""
    return [e for e in audit_log(state).read() if e["message_type"] == message_type]


@pytest.fixture(scope="module")
def validated(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> dict[str, tuple[SiteIdentity, ValidationRequest, ArrayRecord]]:
    """Both queries at both sites, with a coordinator asking for one-patient cells."""
    root = tmp_path_factory.mktemp("validation")
    contexts = {s: site_context(s, site_paths[s], root / s) for s in SITES}
    base = {keys.TASK: TASK, keys.MODEL: "mlp", keys.SEED: 3}
    replies = [app(query(keys.FEATURE_STATS_QUERY, base), contexts[s]) for s in SITES]
    sums = [list(r.content.metric_records[keys.METRICS][keys.FEATURE_SUMS]) for r in replies]
    stats = combine_for_task(TASK, sums)  # type: ignore[arg-type]
    model = get_task(TASK).build_model(ModelName.MLP, seed=3)
    arrays = ArrayRecord(model.state_dict())
    config = base | {
        keys.PREPROCESSING_MEAN: list(stats.mean),
        keys.PREPROCESSING_STD: list(stats.std),
        keys.MIN_SUBGROUP_PATIENTS: 1,
        keys.MIN_SUBGROUP_EVENTS: 1,
    }
    out = {}
    for site in SITES:
        reply = app(query(keys.VALIDATE_QUERY, config, arrays), contexts[site])
        assert not reply.has_error(), reply.error
        out[site] = (
            resolve_site(contexts[site]),
            ValidationRequest.from_record(ConfigRecord(config)),
            arrays,
        )
    return out


def test_a_validation_reply_holds_only_allow_listed_aggregates(
    validated: dict[str, tuple[SiteIdentity, ValidationRequest, ArrayRecord]],
) -> None:
    for site, (identity, request, arrays) in validated.items():
        # Prepare: what stayed at the site - every test row's probability and raw values.
        labels, probability, _ = score_test_rows(request, identity, arrays)
        _, test = get_task(TASK).split_labelled(site, identity.data_path)
        per_patient = set(probability.tolist())

        # Execute
        (entry,) = sent(identity.state_dir, keys.VALIDATE_QUERY)

        # Assert: no arrays, allow-listed names, single numbers only, none a patient's
        # probability; every count a multiple of the bucket and not the exact count.
        assert entry["kind"] == "reply" and entry["arrays"] == []
        metrics = entry["metrics"][keys.METRICS]
        assert set(metrics) <= keys.ALLOWED_VALIDATION_METRICS
        assert all(isinstance(v, float | str) for v in metrics.values())
        assert not per_patient & {v for v in metrics.values() if isinstance(v, float)}
        assert set(entry["configs"]) == {keys.SITE}
        assert metrics["all/patients"] != float(labels.size)
        for key, value in metrics.items():  # rates rounded: no exact count comes back
            if not key.endswith(("/patients", "/events")):
                assert value == round(value, 2), key
        for key, value in metrics.items():
            if key.endswith(("/patients", "/events")):
                assert value % keys.COUNT_BUCKET == 0 and value >= keys.COUNT_BUCKET
        assert test.n == labels.size  # the rows scored are the site's test rows


def test_a_cell_below_the_site_floor_is_never_sent_whatever_the_coordinator_asks(
    validated: dict[str, tuple[SiteIdentity, ValidationRequest, ArrayRecord]],
) -> None:
    # Prepare: the request asked for one-patient cells. VA's test rows hold 3 women (2 events,
    # 1 non-event), Hungary's 19 women with 4 events: both under the site's floor of 10
    # patients and 5 events and 5 non-events.
    for site, (identity, request, arrays) in validated.items():
        labels, _, subgroups = score_test_rows(request, identity, arrays)
        female = labels[subgroups["sex=female"]]
        assert female.size < 10 or min(female.sum(), female.size - female.sum()) < 5

        # Execute
        (entry,) = sent(identity.state_dir, keys.VALIDATE_QUERY)
        metrics = entry["metrics"][keys.METRICS]

        # Assert: each small cell is absent altogether; each large cell is there.
        assert not [k for k in metrics if k.startswith("sex=")]  # male alone = all - female
        assert "all/auroc" in metrics
        for cell, mask in subgroups.items():
            y = labels[mask]
            small = y.size < 10 or min(y.sum(), y.size - y.sum()) < 5
            assert (f"{cell}/auroc" in metrics) is not small, (site, cell)


def test_the_feature_stats_reply_holds_only_noised_sums(
    validated: dict[str, tuple[SiteIdentity, ValidationRequest, ArrayRecord]],
) -> None:
    for site, (identity, _, _) in validated.items():
        # Prepare: the exact sums of the site's training rows (never sent).
        task = get_task(TASK)
        train, _ = task.split_labelled(site, identity.data_path)
        exact = exact_sums(task.encode(train.columns), task.feature_bounds())

        # Execute
        (entry,) = sent(identity.state_dir, keys.FEATURE_STATS_QUERY)

        # Assert: one list of 2F+1 numbers, whatever the number of rows, none of them exact
        # (the row count included), and no arrays.
        assert entry["arrays"] == []
        assert list(entry["metrics"][keys.METRICS]) == [keys.FEATURE_SUMS]
        released = np.array(entry["metrics"][keys.METRICS][keys.FEATURE_SUMS])
        assert released.shape == (2 * task.n_features + 1,)
        assert not np.isin(released, exact).any()
        assert released[-1] != train.n
