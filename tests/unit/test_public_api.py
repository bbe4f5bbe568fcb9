"""Each package exports a deliberate, sorted facade whose names all exist."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "fedcare",
    "fedcare.tasks",
    "fedcare.server",
    "fedcare.client",
    "fedcare.privacy",
    "fedcare.simulations",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute}"


def test_layout_folders_import_as_subpackages() -> None:
    for name, folder in [
        ("fedcare.server", "server"),
        ("fedcare.client", "client"),
        ("fedcare.privacy", "privacy"),
        ("fedcare.simulations", "simulations"),
    ]:
        module = importlib.import_module(name)
        assert module.__file__ is not None and f"/{folder}/__init__.py" in module.__file__.replace(
            "\\", "/"
        )


def test_no_exported_name_is_also_a_submodule() -> None:
    """A package export named like one of the package's own submodules is rebound to that
    module by the first import of the submodule by its path (``fedcare.simulations.simulate``
    was both, and a benchmark's import made every later ``from fedcare.simulations import
    simulate`` return a module). No package may export such a name."""
    import pkgutil

    for name in PACKAGES:
        package = importlib.import_module(name)
        submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        assert not submodules & set(package.__all__), name
