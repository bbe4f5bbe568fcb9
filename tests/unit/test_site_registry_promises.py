"""fedcare.server.site_registry: a reply's site is the registered name of the authenticated node;
``sites.json`` is read exactly as ``pki add-site`` and ``coordinator start`` write it, and an
unreadable one is refused in one line that says who writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcare.errors import ConfigError
from fedcare.privacy.pki import add_site, generate_site_key, init_federation
from fedcare.server.site_registry import SiteRegistry

WRITTEN_BY = "it is written by 'fedcare pki add-site' and 'fedcare coordinator start'"


def test_node_ids_map_to_the_registered_names_and_every_site_has_its_key(
    tmp_path: Path,
) -> None:
    coordinator = tmp_path / "coordinator"
    init_federation(coordinator, ["fed.example.org"])
    for name in ("cleveland", "va", "zurich"):
        add_site(coordinator, name, generate_site_key(tmp_path / name, name).public_key)
    path = coordinator / "sites.json"
    entries = json.loads(path.read_text())
    entries["cleveland"]["node_id"] = "5124870912"  # as 'coordinator start' records it
    entries["va"]["node_id"] = "17"
    path.write_text(json.dumps(entries))

    registry = SiteRegistry.load(path)

    assert registry.names == {5124870912: "cleveland", 17: "va"}  # zurich not yet started
    assert registry.public_keys == {
        name: (coordinator / "sites" / name / "site.pub").resolve()
        for name in ("cleveland", "va", "zurich")
    }


def test_a_registry_is_read_as_utf_8_whatever_the_hosts_locale(
    tmp_path: Path, ascii_locale: None
) -> None:
    path = tmp_path / "sites.json"
    path.write_bytes('{"va": {"public_key": "/srv/zürich/site.pub", "node_id": "3"}}'.encode())

    registry = SiteRegistry.load(path)

    assert registry.public_keys == {"va": Path("/srv/zürich/site.pub")}
    assert registry.names == {3: "va"}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "FileNotFoundError"),
        ("{not json", "JSONDecodeError"),
        ('{"va": {"node_id": "3"}}', "KeyError"),
        ('{"va": {"public_key": "/k", "node_id": "three"}}', "ValueError"),
        ('["va"]', "AttributeError"),
        ('{"va": null}', "AttributeError"),
        ('{"va": {"public_key": "/k", "node_id": [3]}}', "TypeError"),
    ],
)
def test_an_unreadable_registry_is_refused_naming_the_file_the_fault_and_its_writers(
    tmp_path: Path, content: str | None, error: str
) -> None:
    path = tmp_path / "sites.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError) as refused:
        SiteRegistry.load(path)

    assert str(refused.value) == f"{path}: site registry unreadable ({error}); {WRITTEN_BY}"
