"""``fedcare serve`` as a real process: it prints where it listens, a standard OIP client
(tritonclient) gets the released model's probabilities over TLS, SIGTERM stops it cleanly; a
tampered bundle makes it exit non-zero with one line before it listens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
from typer.testing import CliRunner

from fedcare.bundle import WEIGHTS_FILE, load_bundle
from fedcare.cli import app
from tests.release_bundle import copy_bundle, make_bundle, raw_rows, release_key

FEDCARE = [sys.executable, "-m", "fedcare"]


def _setup(root: Path, site_file: Path) -> tuple[Path, Path, list[str], str, Path]:
    runner = CliRunner()
    keys = release_key(root / "owner")
    bundle = make_bundle(root / "release", keys, site_file)
    folder = root / "coordinator"
    assert runner.invoke(app, ["pki", "init", "--dir", str(folder)]).exit_code == 0
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
    added = runner.invoke(
        app, ["serve", "add-key", "--keys", str(root / "keys.json"), "--name", "clinic-b"]
    )
    token = added.stdout.strip().splitlines()[0]
    args = [
        *("--key", str(keys.public_key), "--keys", str(root / "keys.json")),
        *("--tls-cert", str(folder / "serving.crt"), "--tls-key", str(folder / "serving.key")),
        *("--grpc-port", "0", "--http-port", "0"),
    ]
    return bundle, keys.public_key, args, token, folder / "ca.crt"


def test_fedcare_serve_answers_a_standard_client_and_refuses_a_tampered_bundle(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    bundle, public_key, args, token, ca = _setup(tmp_path, site_paths["cleveland"])
    tampered = copy_bundle(bundle, tmp_path / "tampered")
    weights = bytearray((tampered / WEIGHTS_FILE).read_bytes())
    weights[-1] ^= 0x80
    (tampered / WEIGHTS_FILE).write_bytes(bytes(weights))
    rows = raw_rows(site_paths["va"], 12)
    env = {**os.environ, "COLUMNS": "200"}

    refused = subprocess.run(
        [*FEDCARE, "serve", str(tampered), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    server = subprocess.Popen(
        [*FEDCARE, "serve", str(bundle), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        banner = [server.stdout.readline() for _ in range(4)]
        grpc_line = next(line for line in banner if line.startswith("grpc"))
        port = grpc_line.split()[1].rpartition(":")[2]
        client = triton_grpc.InferenceServerClient(
            f"localhost:{port}", ssl=True, root_certificates=str(ca)
        )
        inputs = []
        for name, values in rows.items():
            tensor = triton_grpc.InferInput(name, [len(values)], "FP32")
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        result = client.infer("heart-risk", inputs, headers={"authorization": f"Bearer {token}"})
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)

    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"error: {tampered}: changed since signing: {WEIGHTS_FILE}; refuse to use it"
    ]
    assert refused.stdout == ""  # it never got as far as listening
    assert banner[0].startswith("serving heart-risk version v7"), banner
    expected = load_bundle(bundle, public_key).predict_proba(rows)
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=1e-6)
    assert server.returncode == 0, stderr
    assert "key=clinic-b endpoint=ModelInfer status=OK batch=12" in stderr
    assert token not in stderr
