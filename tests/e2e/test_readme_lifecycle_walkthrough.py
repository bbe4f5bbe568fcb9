"""README "From training to a served model", run as written in a fresh copy of the repository:
train with the federation's statistics, register, validate across the simulated sites, the gate
refusing then releasing, verify, a hospital's offline validation, and serving over TLS with an
API key (curl, as a user would). The benchmark block ("Serving speed") is not run here: it has
its own test (tests/e2e/test_bench_serve.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.readme_walkthrough import failure, readme_blocks, repository_copy, run_block

pytestmark = pytest.mark.slow
HEADINGS = (
    "From training to a served model",
    "The release gate and the signed bundle",
    "A hospital validates a release on its own patients",
    "Serving the release: `fedcare serve`",
)


def test_the_owner_lifecycle_walkthrough_runs_as_written(tmp_path: Path) -> None:
    repository = repository_copy(tmp_path / "fedcare")
    output, errors = "", ""
    # Execute: every block of the four parts, in order, as a user pastes them
    for heading in HEADINGS:
        for block in readme_blocks(heading):
            result = run_block(block, repository, timeout=900)
            assert result.returncode == 0, failure(result)
            output, errors = output + result.stdout, errors + result.stderr
    # Assert: each step did what the README says it does
    assert "registered v1: heart-disease logreg, fedyogi, 5 rounds" in output
    assert re.search(r"validated v1 at 3 site\(s\)", output), output[-3000:]
    assert "switzerland: too few patients" in output
    assert "v1 does not pass the release gate" in errors and "refused: exit 6" in output
    assert "federation: validating sites = 3, limit >= 4" in errors
    assert "released v1: every gate criterion holds" in output
    assert "verified:" in output and "is signed by owner-release.pub and unchanged" in output
    assert "nothing was sent" in output
    answer = json.loads(output[output.index('{"model_name"') :].splitlines()[0])
    assert answer["model_name"] == "fedcare-heart-disease" and answer["model_version"] == "v1"
    probability = answer["outputs"][0]["data"][0]
    assert 0.0 < probability < 1.0
    registry = repository / "runs" / "registry"
    record = [json.loads(line) for line in (registry / "registry.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in record] == ["version", "validation", "release"]
    assert record[0]["preprocessing"]["mean"] == record[1]["preprocessing"]["mean"]  # reused
    serve_log = (repository / "runs" / "serve.log").read_text()
    assert "key=clinic-a endpoint=model/infer status=200 batch=1" in serve_log
    token = (repository / "runs" / "clinic-a.txt").read_text().splitlines()[0]
    assert token not in serve_log
