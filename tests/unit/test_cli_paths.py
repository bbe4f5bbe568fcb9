"""Every filesystem path a ``fedcare`` command takes is made absolute at the command line, before
anything is written or handed to Flower (whose config file wants absolute paths), so relative
paths work for every command - and a new Path option that forgets it fails this test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from fedcare.cli import app


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def _path_parameters() -> list[tuple[str, click.Parameter]]:
    root = typer.main.get_command(app)
    return [
        (" ".join(path), param)
        for path, command in _commands(root)
        for param in command.params
        if isinstance(param.type, click.Path)
    ]


def test_every_path_parameter_of_every_command_is_resolved_to_an_absolute_path() -> None:
    # Prepare
    parameters = _path_parameters()
    # Execute
    unresolved = [
        f"fedcare {command} {param.name}"
        for command, param in parameters
        if not getattr(param.type, "resolve_path", False)
    ]
    # Assert
    assert len(parameters) >= 20  # the walk found the commands (simulate, site, pki, coordinator)
    assert unresolved == [], f"add resolve_path=True to: {unresolved}"


def test_a_relative_path_reaches_the_command_as_an_absolute_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a state folder named relative to the current directory
    (tmp_path / "state").mkdir()
    monkeypatch.chdir(tmp_path)
    # Execute
    result = CliRunner().invoke(app, ["site", "stop", "--state", "state"])
    # Assert
    assert result.exit_code == 0, result.output
    assert f"site daemon in {tmp_path.resolve() / 'state'} stopped" in result.output
