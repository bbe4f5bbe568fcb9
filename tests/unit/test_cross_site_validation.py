"""Cross-site validation, the coordinator's half, with the real ServerApp and real ClientApps
in one process (tests/inprocess_federation.py): authenticated names, signed ledger heads, the
federation's statistics, and validation.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcare import messages as keys
from fedcare.config import Preprocessing, RunConfig
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.runtime_keys import CANDIDATE_KEY, MODE_KEY, REGISTRY_KEY, VALIDATE_MODE
from fedcare.server.app import main as server_main
from fedcare.server.model_validation import VALIDATION_FILE, ValidationFailed
from fedcare.tasks import ModelName, get_task
from fedcare.weights import save_weights
from tests.inprocess_federation import InProcessGrid, registered_federation

SITES = {11: "cleveland", 22: "hungarian", 33: "va"}


def candidate(folder: Path) -> Path:
    path = folder / "candidate.safetensors"
    save_weights(path, get_task("heart-disease").build_model(ModelName.LOGREG, seed=3).state_dict())
    return path


def validate(grid: InProcessGrid, out: Path, weights: Path, registry: Path | None) -> dict:
    from flwr.app import Context, RecordDict

    run_config = RunConfig().to_run_config() | {
        "out-dir": str(out), "min-sites": len(grid.nodes), MODE_KEY: VALIDATE_MODE,
        CANDIDATE_KEY: str(weights), REGISTRY_KEY: str(registry) if registry else "",
    }  # fmt: skip
    context = Context(
        run_id=7, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    server_main(grid, context)
    return json.loads((out / VALIDATION_FILE).read_text())


def test_every_registered_site_validates_with_the_federations_statistics(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    result = validate(InProcessGrid(nodes), tmp_path / "out", candidate(tmp_path), registry)
    assert sorted(result["sites"]) == sorted(SITES.values())
    assert result["missing"] == {}
    for cells in result["sites"].values():
        overall = cells[keys.OVERALL_CELL]
        assert 0.0 <= overall[keys.AUROC] <= 1.0
        assert overall[keys.PATIENTS] % keys.COUNT_BUCKET == 0
    stats = result["preprocessing"]
    assert stats["sites"] == sorted(SITES.values())
    assert len(stats["mean"]) == len(stats["std"]) == 13
    # the statistics were a privacy release: on every site's ledger, and its head kept
    for name in SITES.values():
        assert len(PrivacyLedger(tmp_path / "state" / name).read()) == 1
    heads = json.loads((registry.parent / "ledger-heads.json").read_text())
    assert sorted(heads) == sorted(SITES.values())
    # what the release cost, as each site's signed head says: in the validation's record
    for spent in result["privacy"].values():
        assert spent["delta"] == 1e-5 and spent["epsilon"] == pytest.approx(1.0126, abs=1e-3)
    assert sorted(result["privacy"]) == sorted(SITES.values())
    assert (tmp_path / "out" / "run.record.json").is_file()


def test_a_site_claiming_another_name_is_left_out_and_named(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """Its reply is refused, in the statistics and the validation alike, and named; as a
    refused reply in a round it counts as an answer, so the others validate without it."""
    nodes, registry = registered_federation(tmp_path, SITES, site_paths, claims={33: "cleveland"})
    result = validate(InProcessGrid(nodes), tmp_path / "out", candidate(tmp_path), registry)
    claim = "claims to be site 'cleveland'"
    assert sorted(result["sites"]) == ["cleveland", "hungarian"]
    assert result["missing"] == {"va": claim}
    assert result["preprocessing"]["sites"] == ["cleveland", "hungarian"]
    assert result["preprocessing"]["refused"] == {"va": claim}


def test_a_federation_preprocessed_run_goes_on_without_a_site_whose_reply_is_refused(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """The statistics exchange before round 1 treats a refused reply as a round does: the
    run trains with the other sites' statistics, and the round refuses that site again."""
    from tests.inprocess_federation import run_server

    nodes, registry = registered_federation(tmp_path, SITES, site_paths, claims={33: "cleveland"})
    config = RunConfig(rounds=1, preprocessing=Preprocessing.FEDERATION)
    rounds = run_server(
        InProcessGrid(nodes), config, tmp_path / "run", **{REGISTRY_KEY: str(registry)}
    )
    record = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert record["sites"] == ["cleveland", "hungarian"]
    assert record["refused"] == {"va": "claims to be site 'cleveland'"}
    assert rounds[-1]["updated"] is True
    assert sorted(rounds[-1]["sites"]) == ["cleveland", "hungarian"]


class SilentSiteGrid(InProcessGrid):
    """One node never replies (as a site that timed out)."""

    def __init__(self, nodes: dict, silent: int) -> None:
        super().__init__(nodes)
        self.silent = silent

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        replies = super().send_and_receive(messages, timeout=timeout)
        return [r for r in replies if r.metadata.src_node_id != self.silent]


def test_a_site_that_sends_nothing_is_short_of_min_sites(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """Unlike a refused reply, silence is no answer: with min-sites 3 the statistics stop."""
    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    with pytest.raises(ValidationFailed, match=r"2 replied .*va: timeout"):
        validate(SilentSiteGrid(nodes, silent=33), tmp_path / "out", candidate(tmp_path), registry)
    assert not (tmp_path / "out" / VALIDATION_FILE).exists()


def test_weights_of_another_model_are_refused_before_any_site_is_asked(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    from fedcare.errors import ConfigError

    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    wrong = tmp_path / "mlp.safetensors"
    save_weights(wrong, get_task("heart-disease").build_model(ModelName.MLP, seed=0).state_dict())
    with pytest.raises(ConfigError, match="not weights of a heart-disease logreg model"):
        validate(InProcessGrid(nodes), tmp_path / "out", wrong, registry)
    for name in SITES.values():
        assert not (tmp_path / "state" / name / "privacy-ledger.jsonl").exists()


def test_a_federation_preprocessed_run_trains_and_validates_with_one_statistics_release(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """preprocessing = "federation": the sites release their statistics once, before round
    1 (on their ledgers), train and evaluate with them, and validation reuses them."""
    from fedcare.client.site import SiteIdentity, load_site_data
    from fedcare.feature_stats import FeatureStats
    from fedcare.privacy.events import GAUSSIAN_KIND
    from fedcare.runtime_keys import PREPROCESSING_FILE_KEY
    from fedcare.server.model_registry import ModelRegistry
    from tests.inprocess_federation import run_server

    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    grid = InProcessGrid(nodes)
    config = RunConfig(
        rounds=1, preprocessing=Preprocessing.FEDERATION, dp=True, target_epsilon=5.0
    )
    rounds = run_server(grid, config, tmp_path / "run", **{REGISTRY_KEY: str(registry)})
    assert len(rounds) == 2 and all(len(r["sites"]) == 3 for r in rounds)
    record = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert (
        record["sites"] == sorted(SITES.values()) and record["privacy"]["noise_multiplier"] == 4.0
    )
    kinds = [e.kind for e in PrivacyLedger(tmp_path / "state" / "va").read()]
    assert kinds == [GAUSSIAN_KIND, "dp-sgd"]  # the release first, then the round
    # a site standardises with the federation's statistics, not its own
    stats = FeatureStats.from_json(record)
    node = next(n for n in nodes.values() if n.node_config["site-name"] == "va")
    site = SiteIdentity.from_mapping(node.node_config)
    own, federated = (
        load_site_data("heart-disease", site),
        load_site_data("heart-disease", site, stats),
    )
    assert federated.x_train.shape == own.x_train.shape
    assert abs(float(own.x_train.mean())) < 1e-4 < abs(float(federated.x_train.mean()))
    # registered with its statistics; validation reuses them: no second release
    version = ModelRegistry(tmp_path / "registry").add(tmp_path / "run")
    assert version["preprocessing"]["mean"] == record["mean"]
    # ε and δ per site: its last signed ledger head (whole ledger, at the heads' δ)
    heads = json.loads((tmp_path / "run" / "privacy.json").read_text())
    assert sorted(version["privacy"]) == sorted(SITES.values())
    for name, privacy in version["privacy"].items():
        assert privacy == {"epsilon": heads[name]["epsilon"], "delta": 1e-5}
        assert 1.0 < privacy["epsilon"] < 10.0  # the statistics' release and one DP round
    (tmp_path / "stats.json").write_text(json.dumps(record))
    from flwr.app import Context, RecordDict

    run_config = config.to_run_config() | {
        "out-dir": str(tmp_path / "validation"), "min-sites": 3, MODE_KEY: VALIDATE_MODE,
        CANDIDATE_KEY: str(tmp_path / "run" / "global_model.safetensors"),
        REGISTRY_KEY: str(registry), PREPROCESSING_FILE_KEY: str(tmp_path / "stats.json"),
    }  # fmt: skip
    server_main(
        grid,
        Context(run_id=8, node_id=0, node_config={}, state=RecordDict(), run_config=run_config),
    )
    result = json.loads((tmp_path / "validation" / VALIDATION_FILE).read_text())
    assert result["preprocessing"]["mean"] == record["mean"]
    assert sorted(result["sites"]) == sorted(SITES.values())
    for name in SITES.values():
        kinds = [e.kind for e in PrivacyLedger(tmp_path / "state" / name).read()]
        assert kinds.count(GAUSSIAN_KIND) == 1, (name, kinds)


def test_a_run_started_from_a_version_is_registered_as_its_child(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    from fedcare.errors import ConfigError
    from fedcare.runtime_keys import INITIAL_MODEL_KEY
    from fedcare.server.model_registry import ModelRegistry
    from tests.inprocess_federation import run_server

    nodes, registry_file = registered_federation(tmp_path, SITES, site_paths)
    grid = InProcessGrid(nodes)
    # each site's own statistics: the child's round 0 then scores v1 exactly as v1's last round
    # (a child run releases the federation's statistics afresh: README, "noticed")
    config = RunConfig(rounds=1, dp=True, target_epsilon=5.0, preprocessing=Preprocessing.SITE)
    run_server(grid, config, tmp_path / "first", **{REGISTRY_KEY: str(registry_file)})
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tmp_path / "first")
    start = {REGISTRY_KEY: str(registry_file), INITIAL_MODEL_KEY: str(registry.weights("v1"))}
    rounds = run_server(grid, config, tmp_path / "second", **start)
    first = json.loads((tmp_path / "first" / "rounds.json").read_text())
    assert rounds[0]["sites"] == first[-1]["sites"]  # round 0 of the child is v1 itself
    child = registry.add(tmp_path / "second")
    assert child["version"] == "v2" and child["parent"] == "v1"
    wrong = candidate(tmp_path).with_name("mlp.safetensors")
    save_weights(wrong, get_task("heart-disease").build_model(ModelName.MLP, seed=0).state_dict())
    bad = {REGISTRY_KEY: str(registry_file), INITIAL_MODEL_KEY: str(wrong)}
    with pytest.raises(ConfigError, match="cannot start from these weights"):
        run_server(grid, config, tmp_path / "third", **bad)


def test_a_site_whose_budget_refuses_the_statistics_is_an_answer_and_the_run_goes_on(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """Like a refused round: VA's budget cannot fit the release, the others' statistics are
    the federation's, VA's ledger stays empty, and every other site's run stays within target."""
    from tests.inprocess_federation import run_server

    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    nodes[33].node_config["max-epsilon"] = "0.1"  # va
    config = RunConfig(
        rounds=1, preprocessing=Preprocessing.FEDERATION, dp=True, target_epsilon=1.0
    )
    rounds = run_server(
        InProcessGrid(nodes), config, tmp_path / "run", **{REGISTRY_KEY: str(registry)}
    )
    record = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert record["sites"] == ["cleveland", "hungarian"] and record["declined"] == ["va"]
    assert record["privacy"]["epsilon_at_delta_1e-5"] <= 0.25  # its share of the target
    assert PrivacyLedger(tmp_path / "state" / "va").read() == ()
    assert rounds[1]["missing"] == {"va": "refused: privacy-budget-exhausted"}
    heads = json.loads((tmp_path / "run" / "privacy.json").read_text())
    for name in ("cleveland", "hungarian"):
        assert 0.9 < heads[name]["epsilon"] <= 1.0, name  # the release and the round: the target


def test_statistics_from_one_site_alone_are_refused(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    from tests.inprocess_federation import run_server

    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    for node in (22, 33):
        nodes[node].node_config["max-epsilon"] = "0.1"
    config = RunConfig(
        rounds=1, preprocessing=Preprocessing.FEDERATION, dp=True, target_epsilon=1.0
    )
    with pytest.raises(ValidationFailed, match="1 of 3 sites released usable feature statistics"):
        run_server(InProcessGrid(nodes), config, tmp_path / "run", **{REGISTRY_KEY: str(registry)})
    assert PrivacyLedger(tmp_path / "state" / "hungarian").read() == ()
