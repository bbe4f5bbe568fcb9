"""Issue #20 finding 7: the data gate is an allow-list, and identifiers cannot be ignored into it.

Each case is a real site export (the embedded VA hospital file, with named columns) plus one
offending column, run through the real data gate: ``fedcare site check`` for some cases, the
task's ``load_site`` (what ``site start`` and the ClientApp call) for the rest.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedcare.client.policy import SitePolicy
from fedcare.client.site import SiteIdentity, load_site_data
from fedcare.errors import ConfigError, DataError, ExitCode
from fedcare.tasks import get_task
from fedcare.tasks.heart_disease import RAW_COLUMNS

TASK = get_task("heart-disease")
FIRST = ("John", "Mary", "Ahmed", "Wei", "Olga", "Pedro", "Aisha", "Liam", "Sofia", "Kenji")
LAST = ("Smith", "Garcia", "Okafor", "Chen", "Ivanova", "Silva", "Khan", "Murphy", "Rossi", "Sato")


def _name(i: int) -> str:
    """Distinct names in the shapes hospital exports use."""
    first, last = FIRST[i % 10], LAST[(i // 10) % 10] + "e" * (i // 100)
    shapes = (
        f"{first} {last}",
        f"{last}, {first}",
        f"{first}-Jane O'{last}",
        f"{first} {LAST[i % 10][0]}. {last}",
        f"{last.upper()}, {first.upper()}",
    )
    return shapes[i % len(shapes)]


MONTHS = ("January", "March", "June", "September", "November")
# (case id, offending column, its value in data row i, what the guard must call it)
CASES: list[tuple[str, str, Callable[[int], str], str]] = [
    ("person-names", "person", _name, "person names"),
    ("mrn-in-identifier", "identifier", lambda i: f"{i + 100:08d}", "a record number"),
    ("mrn-in-some-rows", "ref", lambda i: f"MRN{i:07d}" if i % 4 == 0 else "pending",
     "record-number-like codes"),
    ("phone-without-separators", "callback", lambda i: f"555{i:07d}", "phone numbers"),
    ("textual-dates", "seen",
     lambda i: (f"{i % 28 + 1} {MONTHS[i % 5]} 1961", f"{MONTHS[i % 5]} {i % 28 + 1}, 1961",
                f"{i % 28 + 1:02d}-{MONTHS[i % 5][:3]}-1961")[i % 3],
     "full dates"),
    ("three-digit-zip", "zip3", lambda i: f"{i % 1000:03d}", "a ZIP code"),
    ("free-text-notes", "summary",
     lambda i: f"Seen on ward {i} and reports chest pain after exercise", "free-text notes"),
    ("birthday-column", "Birthday", lambda i: str(1930 + i % 40), "a date"),
    ("ssn-in-some-rows", "extra", lambda i: f"123-45-{i:04d}" if i % 5 == 0 else "unknown",
     "social security numbers"),
]  # fmt: skip
VIA_CLI = {"mrn-in-identifier", "ssn-in-some-rows", "textual-dates"}


def _export(
    site_paths: dict[str, Path], tmp_path: Path, extra: dict[str, Callable[[int], str]]
) -> Path:
    """The VA hospital's records as a named-column CSV with ``extra`` columns appended."""
    rows = [line.split(",") for line in site_paths["va"].read_text().splitlines() if line]
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*RAW_COLUMNS, *extra])
        for i, row in enumerate(rows):
            writer.writerow([*row, *(value(i) for value in extra.values())])
    return path


def _site_check(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedcare", "site", "check", "--data", str(path), "--name", "va",
         *options],
        capture_output=True, text=True, timeout=120, env={"COLUMNS": "300", "PATH": ""},
    )  # fmt: skip


def _cli_refusal(path: Path, *options: str) -> str:
    result = _site_check(path, *options)
    assert result.returncode == ExitCode.DATA, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and result.stdout == "", result.stderr
    return lines[0]


def _library_refusal(path: Path, ignore: tuple[str, ...] = ()) -> str:
    with pytest.raises(DataError) as info:
        if ignore:
            TASK.load_site("va", path, ignore_columns=ignore)
        else:  # the call every fedcare version has: the plain refusal needs no new API
            TASK.load_site("va", path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


@pytest.mark.parametrize(("case", "column", "value", "what"), CASES, ids=[c[0] for c in CASES])
def test_an_identifier_column_is_refused_even_when_the_site_ignores_it(
    tmp_path: Path,
    site_paths: dict[str, Path],
    case: str,
    column: str,
    value: Callable[[int], str],
    what: str,
) -> None:
    path = _export(site_paths, tmp_path, {column: value})
    if case in VIA_CLI:
        plain = _cli_refusal(path)
        ignored = _cli_refusal(path, "--ignore-column", column)
    else:
        plain = _library_refusal(path)
        ignored = _library_refusal(path, (column,))
    for message in (plain, ignored):
        assert f"column '{column}'" in message and f"looks like {what}" in message, message
        assert "remove it from the export" in message
        assert value(0) not in message and value(5) not in message  # no patient value quoted
    assert "an identifier cannot be ignored" in ignored


def test_an_undeclared_column_is_refused_and_named(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    path = _export(site_paths, tmp_path, {"smoker": lambda i: str(i % 2), "bmi": lambda i: "27.5"})
    message = _cli_refusal(path)
    assert "column(s) 'smoker', 'bmi' not declared by the task" in message
    assert "--ignore-column NAME" in message


def test_ignore_column_lets_a_harmless_extra_column_through(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    path = _export(site_paths, tmp_path, {"smoker": lambda i: str(i % 2), "bmi": lambda i: "27.5"})
    result = _site_check(path, "--ignore-column", "smoker", "--ignore-column", "bmi")
    assert result.returncode == 0, result.stderr
    assert "85 training and 45 test rows" in result.stdout  # the same as the UCI file itself


def test_an_age_over_89_is_refused_with_the_top_coding_fix(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    rows = site_paths["va"].read_text().splitlines()
    old = [rows[0].replace(rows[0].split(",")[0], "97", 1), rows[1], *rows[2:]]
    path = tmp_path / "old.data"
    path.write_text("\n".join(old) + "\n")
    message = _cli_refusal(path)
    assert "column 'age': 1 value(s) above 90, first at line 1" in message
    assert "top-code every value above 89 to 90 in the export" in message
    assert "97" not in message  # the patient's age is not repeated
    path.write_text("\n".join([old[0].replace("97", "90", 1), *old[1:]]) + "\n")
    assert _site_check(path).returncode == 0  # 90 is the Safe Harbor category "90 or older"


@pytest.mark.parametrize("hospital", ["cleveland", "hungarian", "switzerland", "va"])
def test_the_embedded_hospitals_pass_the_gate(site_paths: dict[str, Path], hospital: str) -> None:
    result = _site_check(site_paths[hospital])
    assert result.returncode == 0, result.stderr
    assert "passes the heart-disease data gate" in result.stdout


def test_the_client_app_loads_with_the_sites_own_ignore_list(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    path = _export(site_paths, tmp_path, {"smoker": lambda i: str(i % 2), "bmi": lambda i: "27.5"})
    policy = SitePolicy(ignore_columns=("smoker", "bmi"))
    node_config = SiteIdentity("va", path, tmp_path / "state", policy).to_node_config()
    # The SuperNode's --node-config as the site daemon writes it, parsed by Flower itself.
    argument = " ".join(
        f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in node_config.items()
    )
    site = SiteIdentity.from_mapping(parse_config_args([argument]))
    assert site.policy.ignore_columns == ("smoker", "bmi")
    assert load_site_data("heart-disease", site).n_train == 85
    unlisted = SiteIdentity("va", path, tmp_path / "state", SitePolicy())
    with pytest.raises(DataError, match="'smoker', 'bmi' not declared"):
        load_site_data("heart-disease", unlisted)
    with pytest.raises(ConfigError, match="may not be empty or contain spaces"):
        SitePolicy(ignore_columns=("smoking status",))
