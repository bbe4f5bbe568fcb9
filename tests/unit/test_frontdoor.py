"""The front door's allow-list: one constant, the same rule as the README's proxy example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

from fedcare.server.frontdoor import FLEET_ROUTES, HEALTH_ROUTE, is_allowed

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_allow_list_is_exactly_the_fleet_api_of_this_flower_version() -> None:
    fleet = {path for _, path in PROTOBUF_REQUEST_TYPES if path.startswith("/v1/fleet/")}

    assert fleet == FLEET_ROUTES


@pytest.mark.parametrize(("method", "path"), sorted(PROTOBUF_REQUEST_TYPES))
def test_every_flower_route_outside_the_fleet_api_is_refused(method: str, path: str) -> None:
    assert is_allowed(method, path) is (path in FLEET_ROUTES and method == "POST")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/fleet/get-run"),
        ("POST", "/v1/fleet/get-run/"),
        ("POST", "/v1/fleet/../control/list-runs"),
        ("POST", "/v1/fleet/"),
        ("POST", "/v1/fleet"),
        ("POST", HEALTH_ROUTE),
        ("POST", "/V1/FLEET/GET-RUN"),
    ],
)
def test_near_misses_are_refused(method: str, path: str) -> None:
    assert not is_allowed(method, path)


def test_health_is_readable() -> None:
    assert is_allowed("GET", HEALTH_ROUTE)


def test_the_readme_reverse_proxy_rule_uses_the_same_routes() -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```nginx\n(.*?)```", text, re.S)
    assert block is not None, "README lost its nginx example"
    rule = re.search(r"\^/v1/fleet/\(([^)]*)\)\$", block.group(1))
    assert rule is not None

    routes = {f"/v1/fleet/{name}" for name in rule.group(1).split("|")}

    assert routes == FLEET_ROUTES
    assert "location / { return 403; }" in block.group(1)
