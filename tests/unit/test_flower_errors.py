"""A failed Flower CLI command is reported in its own words, on one line - never as a fragment of
its JSON (``}``) or of its error box. Each case runs the real ``flwr`` CLI into a real failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fedcare.server.coordinator import CONNECTION, Coordinator, flower_error


@pytest.fixture
def coordinator(tmp_path: Path) -> Coordinator:
    """A coordinator folder whose Flower connection names its CA by a relative path (issue #9's
    failure) and a SuperLink address where nothing listens."""
    coordinator = Coordinator(tmp_path / "coordinator")
    coordinator.flwr_home.mkdir(parents=True)
    (coordinator.flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        'address = "127.0.0.1:9"\nroot-certificates = "fed/coordinator/ca.crt"\n'
    )
    return coordinator


def test_a_json_error_of_flwr_run_is_its_error_message(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    # Prepare: an app folder without pyproject.toml
    (tmp_path / "app").mkdir()
    # Execute
    result = coordinator.flwr("run", str(tmp_path / "app"), CONNECTION, "--format", "json")
    # Assert: Flower exits 0 and prints {"success": false, "error-message": ...} over lines
    assert result.stdout.strip().endswith("}")
    assert flower_error(result) == (
        f"Failed to load Flower App configuration in '{tmp_path / 'app' / 'pyproject.toml'}'. "
        "File may be missing or invalid"
    )


def test_a_json_error_about_the_connection_names_the_relative_path(
    coordinator: Coordinator,
) -> None:
    # Execute
    result = coordinator.flwr("ls", CONNECTION, "--format", "json")
    # Assert
    assert flower_error(result) == (
        f"Failed to parse the Flower configuration file ({coordinator.flwr_home / 'config.toml'})"
        f". Invalid value for key 'root-certificates' in connection '{CONNECTION}': expected "
        "absolute path, but got relative path 'fed/coordinator/ca.crt'"
    )


def test_flowers_exit_report_becomes_its_reason_and_help(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    # Prepare: a public key file that is not an SSH EC public key
    key = tmp_path / "site.pub"
    key.write_text("ecdsa-sha2-nistp384 AAAAnotakey va\n")
    # Execute
    result = coordinator.flwr("supernode", "register", str(key), CONNECTION, "--format", "json")
    # Assert
    assert result.returncode != 0 and "Exit Code:" in result.stderr
    assert flower_error(result) == (
        "Invalid format: Node authentication requires a valid elliptic curve public key in the "
        "SSH format and following a NIST standard elliptic curve (e.g. SECP384R1). Please ensure "
        "that the file path points to a valid public key file and try again"
    )


def test_flowers_error_box_becomes_its_text(coordinator: Coordinator, tmp_path: Path) -> None:
    # Execute
    missing = tmp_path / "nowhere" / "site.pub"
    result = coordinator.flwr("supernode", "register", str(missing), CONNECTION, "--format", "json")
    # Assert
    assert result.returncode != 0 and "╭" in result.stderr
    assert flower_error(result) == f"Public key file '{missing}' does not exist"


def test_output_without_words_still_gives_a_reason() -> None:
    result = subprocess.CompletedProcess(["flwr"], 2, stdout="{\n}\n", stderr="")
    assert flower_error(result) == "Flower's CLI gave no reason (exit code 2)"
