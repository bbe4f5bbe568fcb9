"""``fedcare serve``'s Open Inference Protocol API, in process, against a standard client nobody
here wrote (tritonclient, gRPC and HTTP), over TLS verified with the federation's CA: the same
probabilities as the released model; no or a wrong API key refused; every kind of invalid input
refused with INVALID_ARGUMENT / 400 naming the input, and the server keeps serving."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent.ssl
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from fedcare.bundle import ReleasedModel, load_bundle
from fedcare.cli import app
from fedcare.server.serving.server import Serving, prepare
from tests.release_bundle import make_bundle, raw_rows, release_key

MODEL = "heart-risk"


@dataclass(frozen=True)
class Api:
    serving: Serving
    released: ReleasedModel
    token: str
    ca: Path
    rows: dict[str, np.ndarray]

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def grpc(self) -> triton_grpc.InferenceServerClient:
        address = f"localhost:{self.serving.grpc_port}"
        return triton_grpc.InferenceServerClient(address, ssl=True, root_certificates=str(self.ca))

    def http(self) -> triton_http.InferenceServerClient:
        return triton_http.InferenceServerClient(
            f"localhost:{self.serving.http_port}",
            ssl=True,
            ssl_context_factory=lambda: gevent.ssl.create_default_context(cafile=str(self.ca)),
        )

    def rest(self, path: str, **kwargs: Any) -> httpx.Response:
        """A hand-made REST request (``body``: JSON with NaN allowed, as a client may send)."""
        url = f"https://localhost:{self.serving.http_port}{path}"
        if "body" in kwargs:
            kwargs["content"] = json.dumps(kwargs.pop("body"))
            return httpx.post(url, verify=str(self.ca), **kwargs)
        return httpx.get(url, verify=str(self.ca), **kwargs)


def _tls(folder: Path) -> tuple[Path, Path, Path]:
    runner = CliRunner()
    made = runner.invoke(app, ["pki", "init", "--dir", str(folder)])
    assert made.exit_code == 0, made.output
    issued = runner.invoke(
        app,
        [
            "pki",
            "serving-cert",
            "--dir",
            str(folder),
            "--ca-key",
            str(folder / "offline-ca/ca.key"),
        ],
    )
    assert issued.exit_code == 0, issued.output
    return folder / "ca.crt", folder / "serving.crt", folder / "serving.key"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("serving")
    keys = release_key(root / "owner")
    bundle = make_bundle(root / "release", keys, site_paths["cleveland"])
    ca, cert, key = _tls(root / "coordinator")
    added = CliRunner().invoke(
        app, ["serve", "add-key", "--keys", str(root / "api-keys.json"), "--name", "clinic-a"]
    )
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[0]
    serving = prepare(
        bundle, keys.public_key, root / "api-keys.json", cert, key, "127.0.0.1", 0, 0, max_batch=64
    )
    serving.start_background()
    try:
        yield Api(
            serving,
            load_bundle(bundle, keys.public_key),
            token,
            ca,
            raw_rows(site_paths["hungarian"], 40),
        )
    finally:
        serving.stop()


def _grpc_inputs(columns: dict[str, np.ndarray]) -> list[triton_grpc.InferInput]:
    inputs = []
    for name, values in columns.items():
        tensor = triton_grpc.InferInput(name, list(values.shape), "FP32")
        tensor.set_data_from_numpy(values.astype(np.float32))
        inputs.append(tensor)
    return inputs


def _http_inputs(columns: dict[str, np.ndarray], binary: bool) -> list[triton_http.InferInput]:
    inputs = []
    for name, values in columns.items():
        tensor = triton_http.InferInput(name, list(values.shape), "FP32")
        tensor.set_data_from_numpy(values.astype(np.float32), binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_standard_clients_get_the_released_models_probabilities_over_tls(api: Api) -> None:
    expected = api.released.predict_proba(api.rows)
    grpc_client, http_client = api.grpc(), api.http()

    by_grpc = grpc_client.infer(MODEL, _grpc_inputs(api.rows), headers=api.headers)
    by_http_binary = http_client.infer(
        MODEL,
        _http_inputs(api.rows, binary=True),
        outputs=[triton_http.InferRequestedOutput("probability", binary_data=True)],
        headers=api.headers,
    )
    by_http_json = http_client.infer(
        MODEL, _http_inputs(api.rows, binary=False), headers=api.headers
    )

    for result in (by_grpc, by_http_binary, by_http_json):
        np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=1e-6)
    assert grpc_client.is_server_live() and http_client.is_server_ready()
    assert grpc_client.is_model_ready(MODEL, headers=api.headers)
    metadata = grpc_client.get_model_metadata(MODEL, headers=api.headers, as_json=True)
    assert [i["name"] for i in metadata["inputs"]] == list(api.released.input_names)
    assert {i["datatype"] for i in metadata["inputs"]} == {"FP32"}
    assert metadata["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": ["-1"]}]


@pytest.mark.parametrize("token", [None, "fck_not-a-key"], ids=["missing", "wrong"])
def test_a_missing_or_wrong_api_key_is_refused(api: Api, token: str | None) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}

    with pytest.raises(InferenceServerException) as by_grpc:
        api.grpc().infer(MODEL, _grpc_inputs(api.rows), headers=headers)
    with pytest.raises(InferenceServerException) as by_http:
        api.http().infer(MODEL, _http_inputs(api.rows, binary=False), headers=headers)
    metadata = api.rest(f"/v2/models/{MODEL}", headers=headers)

    assert by_grpc.value.status() == "StatusCode.UNAUTHENTICATED"
    assert by_http.value.status() == "401"
    assert metadata.status_code == 401
    assert api.rest("/v2/health/live").json() == {"live": True}  # probes need no key


def _invalid(rows: dict[str, np.ndarray]) -> dict[str, Callable[[], tuple[str, list[dict]]]]:
    """Each kind of invalid REST request: (the input it must name, the request's inputs)."""

    def tensors(columns: dict[str, np.ndarray], **override: dict) -> list[dict]:
        out = []
        for name, values in columns.items():
            tensor = {"name": name, "datatype": "FP32", "shape": [len(values)]}
            out.append({**tensor, "data": values.tolist(), **override.get(name, {})})
        return out

    small = {name: values[:3] for name, values in rows.items()}
    nan = {**small, "oldpeak": np.array([0.5, np.nan, 1.0])}
    big = {name: np.resize(values, 65) for name, values in rows.items()}
    return {
        "missing input": lambda: ("chol", [t for t in tensors(small) if t["name"] != "chol"]),
        "unknown input": lambda: (
            "heart_rate",
            [
                *tensors(small),
                {"name": "heart_rate", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
            ],
        ),
        "wrong datatype": lambda: (
            "sex",
            tensors(small, sex={"datatype": "BYTES", "data": ["m"] * 3}),
        ),
        "wrong shape": lambda: ("age", tensors(small, age={"shape": [1, 3]})),
        "shape and data disagree": lambda: ("age", tensors(small, age={"shape": [4]})),
        "out of range": lambda: (
            "thalach",
            tensors({**small, "thalach": np.array([150, 400, 160])}),
        ),
        "not a level": lambda: ("cp", tensors({**small, "cp": np.array([1, 2.5, 3])})),
        "non-finite": lambda: ("oldpeak", tensors(nan)),  # a NaN literal in the JSON body
        "batch too large": lambda: ("age", tensors(big)),
    }


INVALID_KINDS = [
    "missing input",
    "unknown input",
    "wrong datatype",
    "wrong shape",
    "shape and data disagree",
    "out of range",
    "not a level",
    "non-finite",
    "batch too large",
]


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_rest_refuses_each_invalid_input_by_name_and_keeps_serving(api: Api, kind: str) -> None:
    name, inputs = _invalid(api.rows)[kind]()

    refused = api.rest(f"/v2/models/{MODEL}/infer", body={"inputs": inputs}, headers=api.headers)
    valid = api.http().infer(MODEL, _http_inputs(api.rows, binary=False), headers=api.headers)

    assert refused.status_code == 400, refused.text
    assert f"input '{name}'" in refused.json()["error"]
    if kind == "non-finite":
        assert "not a finite number" in refused.json()["error"]
    np.testing.assert_allclose(
        valid.as_numpy("probability"), api.released.predict_proba(api.rows), rtol=1e-6
    )


GRPC_CASES: dict[str, tuple[str, Callable[[dict[str, np.ndarray]], list]]] = {
    "missing input": ("chol", lambda r: _grpc_inputs({k: v for k, v in r.items() if k != "chol"})),
    "unknown input": ("heart_rate", lambda r: _grpc_inputs({**r, "heart_rate": r["age"]})),
    "wrong datatype": (
        "sex",
        lambda r: [
            *_grpc_inputs({k: v for k, v in r.items() if k != "sex"}),
            _bytes_input("sex", len(r["sex"])),
        ],
    ),
    "wrong shape": ("age", lambda r: _grpc_inputs({**r, "age": r["age"].reshape(1, -1)})),
    "out of range": ("thalach", lambda r: _grpc_inputs({**r, "thalach": r["thalach"] + 1000})),
    "not a level": ("cp", lambda r: _grpc_inputs({**r, "cp": r["cp"] + 0.5})),
    "non-finite": ("oldpeak", lambda r: _grpc_inputs({**r, "oldpeak": r["oldpeak"] * np.inf})),
    "batch too large": ("age", lambda r: _grpc_inputs({k: np.resize(v, 65) for k, v in r.items()})),
}


def _bytes_input(name: str, n: int) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput(name, [n], "BYTES")
    tensor.set_data_from_numpy(np.array([b"m"] * n, dtype=np.object_))
    return tensor


@pytest.mark.parametrize("kind", list(GRPC_CASES))
def test_grpc_refuses_each_invalid_input_by_name_and_keeps_serving(api: Api, kind: str) -> None:
    name, build = GRPC_CASES[kind]
    client = api.grpc()

    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, build(dict(api.rows)), headers=api.headers)
    valid = client.infer(MODEL, _grpc_inputs(api.rows), headers=api.headers)

    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"input '{name}'" in refused.value.message()
    np.testing.assert_allclose(
        valid.as_numpy("probability"), api.released.predict_proba(api.rows), rtol=1e-6
    )


def test_the_access_log_names_the_key_never_the_token_nor_a_value(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    rows = {name: values[:2] for name, values in api.rows.items()}
    rows["chol"] = np.array([123.25, 987.75], dtype=np.float32)  # values to look for

    with caplog.at_level(logging.INFO, logger="fedcare.serve.access"):
        api.grpc().infer(MODEL, _grpc_inputs(rows), headers=api.headers)
        api.rest(f"/v2/models/{MODEL}", headers={"authorization": "Bearer fck_wrong"})

    lines = [r.getMessage() for r in caplog.records if r.name == "fedcare.serve.access"]
    assert any("key=clinic-a endpoint=ModelInfer status=OK batch=2" in line for line in lines)
    assert any("key=- endpoint=model/metadata status=401" in line for line in lines)
    text = "\n".join(lines)
    assert api.token not in text and "fck_wrong" not in text
    assert "123.25" not in text and "987.75" not in text
