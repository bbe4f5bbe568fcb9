"""fedcare.superexec: the executor's secret is a fresh private file, and the executor's command
line names that file (and every other input) by path, never the secret itself."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from flwr.supercore.constant import TaskType

from fedcare.superexec import ExecutorSettings, executor_argv, write_secret


def test_each_start_writes_a_fresh_32_byte_secret_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    first = write_secret(tmp_path).read_bytes()

    path = write_secret(tmp_path)

    assert path == tmp_path / "superexec.secret"
    assert len(path.read_bytes()) == 32 and path.read_bytes() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["superexec.secret"]


def test_the_executor_command_line_names_its_inputs_by_absolute_path_and_apps_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ExecutorSettings(
        runtime_api_address="127.0.0.1:9091",
        secret_file=write_secret(tmp_path).relative_to(tmp_path),
        state_dir=Path("state"),
        approved=frozenset({"ffff", "0000", "abcd"}),
        task_type=TaskType.SERVER_APP,
        root_certificates=Path("ca.crt"),
    )

    argv = executor_argv("fedcare.server.executor", settings)

    assert argv == [
        sys.executable, "-m", "fedcare.server.executor",
        "--runtime-api-address", "127.0.0.1:9091",
        "--superexec-auth-secret-file", str(tmp_path.resolve() / "superexec.secret"),
        "--state", str(tmp_path.resolve() / "state"),
        "--approve", "0000", "--approve", "abcd", "--approve", "ffff",
        "--root-certificates", str(tmp_path.resolve() / "ca.crt"),
    ]  # fmt: skip
    secret = (tmp_path / "superexec.secret").read_bytes()
    assert not any(secret.hex() in arg or secret in arg.encode() for arg in argv)


def test_a_site_executor_on_plain_loopback_gets_no_root_certificates_option(
    tmp_path: Path,
) -> None:
    settings = ExecutorSettings(
        runtime_api_address="127.0.0.1:9094",
        secret_file=tmp_path / "superexec.secret",
        state_dir=tmp_path,
        approved=frozenset(),
        task_type=TaskType.CLIENT_APP,
    )

    argv = executor_argv("fedcare.client.executor", settings)

    assert argv[3:] == [
        "--runtime-api-address", "127.0.0.1:9094",
        "--superexec-auth-secret-file", str(tmp_path.resolve() / "superexec.secret"),
        "--state", str(tmp_path.resolve()),
    ]  # fmt: skip
