"""Named federations a researcher can simulate: which sites, and each site's data file."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fedcare.errors import ConfigError


@dataclass(frozen=True)
class SiteSource:
    """One simulated hospital and its raw data file."""

    name: str
    path: Path


@dataclass(frozen=True)
class Scenario:
    """A federation of sites for one task."""

    name: str
    task: str
    sites: tuple[SiteSource, ...]


def embedded_data_dir() -> Path:
    """Folder of the packaged UCI Heart Disease files (CC BY 4.0; see its README)."""
    return Path(str(resources.files("fedcare") / "data" / "heart-disease"))


def heart_disease_scenario() -> Scenario:
    """The four real hospitals of the UCI Heart Disease data (FLamby's Fed-Heart-Disease)."""
    folder = embedded_data_dir()
    return Scenario(
        name="heart-disease",
        task="heart-disease",
        sites=tuple(
            SiteSource(name=name, path=folder / f"processed.{name}.data")
            for name in ("cleveland", "hungarian", "switzerland", "va")
        ),
    )


_SCENARIOS = {"heart-disease": heart_disease_scenario}
SITE_FILE_SUFFIXES = (".csv", ".data")
MIN_SITES = 2


def folder_scenario(folder: Path, task: str) -> Scenario:
    """Every ``*.csv``/``*.data`` file in ``folder`` is one site, named after the file.

    ``processed.va.data`` is site ``va``; ``leeds.csv`` is site ``leeds``.
    """
    files = sorted(
        p for p in folder.iterdir() if p.suffix in SITE_FILE_SUFFIXES and not p.name.startswith(".")
    )
    if len(files) < MIN_SITES:
        raise ConfigError(
            f"{folder}: a scenario folder needs at least {MIN_SITES} site files "
            f"({', '.join(SITE_FILE_SUFFIXES)}); found {len(files)}"
        )
    sites = tuple(
        SiteSource(name=p.name.removesuffix(p.suffix).split(".")[-1], path=p) for p in files
    )
    return Scenario(name=str(folder), task=task, sites=sites)


def get_scenario(name: str, task: str = "heart-disease") -> Scenario:
    """A named scenario, or a folder of site files (see :func:`folder_scenario`)."""
    if name in _SCENARIOS:
        return _SCENARIOS[name]()
    folder = Path(name)
    if folder.is_dir():
        return folder_scenario(folder, task)
    raise ConfigError(
        f"unknown scenario {name!r}: neither a folder of site files nor one of: "
        f"{', '.join(sorted(_SCENARIOS))}"
    )
