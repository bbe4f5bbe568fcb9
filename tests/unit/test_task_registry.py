"""The task registry: tasks are found through the ``fedcare.tasks`` entry points of installed
distributions, fedcare's own included; an unknown, broken or doubly declared task is refused in
one line that names it and the fix.

Each test installs fake distributions the way pip lays them out (a ``*.dist-info`` folder with
``METADATA`` and ``entry_points.txt``, plus the task's module) in its own folder on ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import fedcare.tasks
from fedcare.config import RunConfig
from fedcare.errors import ConfigError
from fedcare.tasks import get_task, require_task, task_module, task_names
from fedcare.tasks.names import ENTRY_POINT_GROUP, forget_installed_tasks, installed_tasks

ROOT = Path(__file__).resolve().parents[2]
# A task whose module imports the real heart-disease task: a plugin need not copy fedcare's code.
GOOD_MODULE = """
from fedcare.tasks.heart_disease import HeartDiseaseTask


class {cls}(HeartDiseaseTask):
    name = {name!r}
"""


@pytest.fixture
def site_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` to install fake distributions into; the registry is read
    afresh before and after the test, and the tasks loaded meanwhile are forgotten."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(fedcare.tasks, "_LOADED", {})
    forget_installed_tasks()
    yield folder
    forget_installed_tasks()


def install(folder: Path, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """Lay out distribution ``dist`` 1.0 declaring ``entries`` in the task group, with
    ``modules`` (name -> source) beside it, as ``pip install`` would."""
    info = folder / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)


def test_fedcares_own_task_is_found_through_its_entry_point() -> None:
    # Prepare / Execute
    entries = installed_tasks()["heart-disease"]
    # Assert: declared once, by fedcare itself, and it loads the real task
    assert len(entries) == 1
    assert entries[0].value == "fedcare.tasks.heart_disease:HeartDiseaseTask"
    assert entries[0].distribution.startswith("fedcare ")
    assert get_task("heart-disease").name == "heart-disease"


def test_every_task_pyproject_declares_loads_and_the_install_is_current() -> None:
    """A broken line in pyproject's task table fails here, and so does an install whose
    metadata predates the table (reinstall: pip install -e .)."""
    # Prepare
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][ENTRY_POINT_GROUP]
    # Execute
    installed = {
        name: entries[0].value
        for name, entries in installed_tasks().items()
        if entries[0].distribution.startswith("fedcare ")
    }
    # Assert
    assert declared == installed, "installed metadata is stale: reinstall (pip install -e .)"
    for name in declared:
        assert get_task(name).name == name
        assert tuple(task_module(name).FEATURE_NAMES) == get_task(name).feature_names


def test_an_installed_plugin_is_found_validated_and_loaded(site_packages: Path) -> None:
    # Prepare
    install(
        site_packages,
        "acme-tasks",
        {"acme-demo": "acme_demo_task:AcmeTask"},
        {"acme_demo_task": GOOD_MODULE.format(cls="AcmeTask", name="acme-demo")},
    )
    # Execute
    config = RunConfig(task="acme-demo")
    task = get_task("acme-demo")
    # Assert
    assert task_names() == ("acme-demo", "heart-disease")
    assert config.task == "acme-demo" and task.name == "acme-demo"
    assert type(task).__module__ == "acme_demo_task"
    assert get_task("acme-demo") is task  # one instance per process
    from fedcare.tasks.names import TASK_CLASSES

    assert TASK_CLASSES["acme-demo"] == "acme_demo_task:AcmeTask"


def test_an_unknown_task_is_one_line_listing_the_installed_ones(site_packages: Path) -> None:
    # Prepare
    install(site_packages, "acme-tasks", {"acme-demo": "acme_demo_task:AcmeTask"}, {})
    # Execute
    with pytest.raises(ConfigError) as caught:
        RunConfig(task="heart-disaese")
    # Assert
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown task 'heart-disaese'; installed tasks: acme-demo, heart-disease" in message
    assert "'fedcare.tasks' entry point" in message


@pytest.mark.parametrize(
    ("value", "source", "expected"),
    [
        ("acme_missing:AcmeTask", None, "ModuleNotFoundError: No module named 'acme_missing'"),
        ("acme_broken:AcmeTask", "raise RuntimeError('no GPU\\nhere')",
         "RuntimeError: no GPU here"),
        ("acme_broken:Missing", GOOD_MODULE.format(cls="AcmeTask", name="acme-demo"),
         "AttributeError"),
        ("acme_broken:AcmeTask", "class AcmeTask:\n    name = 'acme-demo'\n",
         "lacks binary_features, build_model, encode, feature_bounds, feature_names, load_site"),
        ("acme_broken:AcmeTask", GOOD_MODULE.format(cls="AcmeTask", name="other"),
         "calls itself 'other'"),
    ],
    ids=["module-missing", "import-fails", "class-missing", "not-a-task", "wrong-name"],
)  # fmt: skip
def test_a_broken_plugin_is_refused_naming_the_task_its_entry_point_and_the_fix(
    site_packages: Path, value: str, source: str | None, expected: str
) -> None:
    # Prepare
    modules = {} if source is None else {"acme_broken": source}
    install(site_packages, "acme-tasks", {"acme-demo": value}, modules)
    sys.modules.pop("acme_broken", None)
    # Execute
    require_task("acme-demo")  # the name alone is valid: nothing is imported to check it
    with pytest.raises(ConfigError) as caught:
        get_task("acme-demo")
    sys.modules.pop("acme_broken", None)
    # Assert
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("task 'acme-demo'")
    assert f"acme-demo = {value!r} from acme-tasks 1.0" in message
    assert expected in message
    assert message.endswith("reinstall or fix that package, or uninstall it")
    assert get_task("heart-disease").name == "heart-disease"  # the other tasks still run


def test_a_task_name_declared_by_two_distributions_is_refused_naming_both(
    site_packages: Path,
) -> None:
    # Prepare
    module = {"acme_demo_task": GOOD_MODULE.format(cls="AcmeTask", name="acme-demo")}
    install(site_packages, "acme-tasks", {"acme-demo": "acme_demo_task:AcmeTask"}, module)
    install(site_packages, "rival-tasks", {"acme-demo": "rival_task:RivalTask"}, {})
    # Execute
    with pytest.raises(ConfigError) as caught:
        RunConfig(task="acme-demo")
    # Assert
    message = str(caught.value)
    assert "task 'acme-demo' is declared by 2 installed distributions" in message
    assert "acme-tasks 1.0" in message and "rival-tasks 1.0" in message
    assert "uninstall all but the one this site approved" in message
    from fedcare.tasks.names import TASK_CLASSES

    assert "acme-demo" not in TASK_CLASSES  # not preloaded either way
    assert RunConfig(task="heart-disease").task == "heart-disease"


def test_a_claim_on_fedcares_own_task_name_is_refused_too(site_packages: Path) -> None:
    # Prepare
    install(site_packages, "rival-tasks", {"heart-disease": "rival_task:RivalTask"}, {})
    # Execute / Assert
    with pytest.raises(ConfigError, match="declared by 2 installed distributions: heart-disease"):
        get_task("heart-disease")


def test_checking_a_plugin_task_name_imports_neither_the_plugin_nor_torch(tmp_path: Path) -> None:
    """Every CLI start validates the run's task: that must read metadata only."""
    # Prepare
    install(
        tmp_path,
        "acme-tasks",
        {"acme-demo": "acme_demo_task:AcmeTask"},
        {"acme_demo_task": "raise SystemExit('imported')\n"},
    )
    code = (
        "import sys\n"
        "from fedcare.config import RunConfig\n"
        "RunConfig(task='acme-demo')\n"
        "print(sorted(m for m in ('acme_demo_task', 'torch', 'sklearn') if m in sys.modules))\n"
    )
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    # Execute
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    # Assert
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
