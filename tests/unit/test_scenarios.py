"""Scenarios: the embedded federation and folders of a researcher's own site files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.errors import ConfigError
from fedcare.simulations.scenarios import get_scenario


def test_default_scenario_is_the_four_real_hospitals() -> None:
    scenario = get_scenario("heart-disease")
    assert [s.name for s in scenario.sites] == ["cleveland", "hungarian", "switzerland", "va"]
    assert all(s.path.is_file() for s in scenario.sites)


def test_folder_scenario_names_sites_after_files(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    for site in ("va", "cleveland"):
        (tmp_path / f"processed.{site}.data").write_bytes(site_paths[site].read_bytes())
    (tmp_path / "notes.txt").write_text("ignored")
    scenario = get_scenario(str(tmp_path))
    assert [s.name for s in scenario.sites] == ["cleveland", "va"]


def test_unknown_scenario_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'mars'"):
        get_scenario("mars")


def test_folder_with_one_site_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n")
    with pytest.raises(ConfigError, match="at least 2 site files"):
        get_scenario(str(tmp_path))
