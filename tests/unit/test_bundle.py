"""Release bundles: signed with model-signing, refused when unsigned, tampered with or signed by
another key (by ``verify_bundle`` and by ``fedcare serve``), and a loaded release predicts what
its model predicts on the federation-standardised features."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedcare.bundle import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    PREPROCESSING_FILE,
    WEIGHTS_FILE,
    BundleError,
    InvalidInput,
    load_bundle,
    verify_bundle,
)
from fedcare.cli import app
from fedcare.privacy.signing import (
    SIGNATURE_FILE,
    SignatureError,
    sign_directory,
    verify_directory,
)
from fedcare.server.release import render_card, write_bundle
from fedcare.tasks.heart_disease import encode_inputs
from tests.release_bundle import CARD, ReleaseKeys, copy_bundle, make_bundle, raw_rows, release_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ReleaseKeys:
    return release_key(tmp_path_factory.mktemp("owner"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> ReleaseKeys:
    return release_key(tmp_path_factory.mktemp("someone-else"))


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, keys: ReleaseKeys, site_paths: dict[str, Path]
) -> Path:
    return make_bundle(tmp_path_factory.mktemp("release"), keys, site_paths["cleveland"])


def _serve_refuses(bundle: Path, public_key: Path, tmp_path: Path) -> str:
    """``fedcare serve`` on ``bundle``: must exit non-zero with one line, before listening."""
    result = CliRunner().invoke(
        app,
        [
            *("serve", str(bundle), "--key", str(public_key), "--keys", str(tmp_path / "k.json")),
            *("--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "k")),
        ],
    )
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_release_key_is_private_and_never_overwritten(tmp_path: Path) -> None:
    keys = release_key(tmp_path / "owner")

    again = CliRunner().invoke(app, ["pki", "release-key", "--dir", str(tmp_path / "owner")])

    assert stat.S_IMODE(os.stat(keys.private_key).st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in keys.private_key.read_bytes()
    assert b"BEGIN PUBLIC KEY" in keys.public_key.read_bytes()
    assert again.exit_code != 0 and "already exists" in again.output


def test_a_bundle_verifies_with_the_owners_key_and_with_model_signing_itself(
    bundle: Path, keys: ReleaseKeys
) -> None:
    from model_signing import verifying

    digests = verify_bundle(bundle, keys.public_key)

    assert set(digests) == {WEIGHTS_FILE, PREPROCESSING_FILE, CARD_FILE, CARD_MARKDOWN_FILE}
    # Anyone can check a release with the sigstore project's own verifier, without fedcare.
    verifying.Config().use_elliptic_key_verifier(public_key=keys.public_key).verify(
        bundle, bundle / SIGNATURE_FILE
    )


@pytest.mark.parametrize("name", [WEIGHTS_FILE, PREPROCESSING_FILE, CARD_FILE])
def test_one_flipped_byte_makes_verify_and_serve_refuse(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path, name: str
) -> None:
    copy = copy_bundle(bundle, tmp_path)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))

    with pytest.raises(BundleError, match=f"changed since signing: {name}"):
        verify_bundle(copy, keys.public_key)
    with pytest.raises(BundleError, match=name):
        load_bundle(copy, keys.public_key)
    assert f"changed since signing: {name}" in _serve_refuses(copy, keys.public_key, tmp_path)


def test_a_bundle_signed_by_another_key_is_refused(
    bundle: Path, other_keys: ReleaseKeys, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="does not verify with"):
        verify_bundle(bundle, other_keys.public_key)
    assert "does not verify with" in _serve_refuses(bundle, other_keys.public_key, tmp_path)


def test_a_bundle_re_signed_by_another_key_is_refused(
    bundle: Path, keys: ReleaseKeys, other_keys: ReleaseKeys, tmp_path: Path
) -> None:
    from fedcare.privacy.signing import sign_directory

    copy = copy_bundle(bundle, tmp_path)
    sign_directory(copy, other_keys.private_key)  # a forger replaces the signature

    with pytest.raises(BundleError, match="does not verify with"):
        verify_bundle(copy, keys.public_key)


def test_an_unsigned_bundle_is_refused(bundle: Path, keys: ReleaseKeys, tmp_path: Path) -> None:
    copy = copy_bundle(bundle, tmp_path)
    (copy / SIGNATURE_FILE).unlink()

    with pytest.raises(BundleError, match="unsigned"):
        verify_bundle(copy, keys.public_key)
    assert "unsigned" in _serve_refuses(copy, keys.public_key, tmp_path)


def test_a_missing_or_added_file_is_refused(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path
) -> None:
    missing = copy_bundle(bundle, tmp_path / "missing")
    (missing / CARD_MARKDOWN_FILE).unlink()
    added = copy_bundle(bundle, tmp_path / "added")
    (added / "extra.py").write_text("print('hello')\n")

    with pytest.raises(BundleError, match=f"{CARD_MARKDOWN_FILE} is missing"):
        verify_bundle(missing, keys.public_key)
    with pytest.raises(BundleError, match=r"not signed: extra\.py"):
        verify_bundle(added, keys.public_key)


def test_the_released_model_predicts_its_models_probability_on_standardised_raw_rows(
    bundle: Path, keys: ReleaseKeys, site_paths: dict[str, Path]
) -> None:
    released = load_bundle(bundle, keys.public_key)
    rows = raw_rows(site_paths["hungarian"], 25)

    probability = released.predict_proba(rows)

    mean = np.asarray(released.preprocessing["mean"])
    std = np.asarray(released.preprocessing["std"])
    x = torch.from_numpy(((encode_inputs(rows) - mean) / std).astype(np.float32))
    with torch.no_grad():
        expected = torch.sigmoid(released.module(x)).numpy().reshape(-1)
    assert probability.shape == (25,) and probability.dtype == np.float32
    np.testing.assert_allclose(probability, expected, rtol=1e-6)
    assert (released.name, released.version, released.task) == ("heart-risk", "v7", "heart-disease")
    assert float(probability.std()) > 0.01  # the weights were loaded: rows differ


@pytest.mark.parametrize(
    ("change", "name", "reason"),
    [
        (lambda c: c.pop("chol"), "chol", "missing"),
        (lambda c: c.update(heart_rate=c["age"]), "heart_rate", "not an input"),
        (lambda c: c.update(age=c["age"].reshape(1, -1)), "age", "shape"),
        (lambda c: c.update(sex=np.array(["m"] * 4)), "sex", "datatype"),
        (lambda c: c.update(trestbps=c["trestbps"][:3]), "trestbps", "rows"),
        (lambda c: c["oldpeak"].__setitem__(2, np.nan), "oldpeak", "not a finite"),
        (lambda c: c["thalach"].__setitem__(1, 400.0), "thalach", r"outside \[0, 260\]"),
        (lambda c: c["cp"].__setitem__(0, 2.5), "cp", "not one of"),
    ],
    ids=["missing", "unknown", "shape", "datatype", "length", "nan", "range", "level"],
)
def test_check_inputs_names_the_bad_input(
    bundle: Path, keys: ReleaseKeys, site_paths: dict[str, Path], change, name, reason
) -> None:
    released = load_bundle(bundle, keys.public_key)
    columns = raw_rows(site_paths["cleveland"], 4)
    change(columns)

    with pytest.raises(InvalidInput, match=reason) as caught:
        released.check_inputs(columns)
    assert caught.value.input_name == name


def test_check_inputs_refuses_a_batch_over_the_maximum(
    bundle: Path, keys: ReleaseKeys, site_paths: dict[str, Path]
) -> None:
    released = load_bundle(bundle, keys.public_key)

    with pytest.raises(InvalidInput, match="exceeds the maximum of 3"):
        released.check_inputs(raw_rows(site_paths["cleveland"], 4), max_batch=3)
    assert released.check_inputs(raw_rows(site_paths["cleveland"], 3), max_batch=3) == 3


def test_write_bundle_never_overwrites_and_leaves_nothing_when_it_refuses(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path
) -> None:
    preprocessing = json.loads((bundle / PREPROCESSING_FILE).read_text())
    wrong_model = {**preprocessing, "model": "logreg"}  # the weights are an MLP's

    with pytest.raises(BundleError, match="already exists"):
        write_bundle(bundle, bundle / WEIGHTS_FILE, preprocessing, CARD, keys.private_key)
    with pytest.raises(BundleError, match="not weights of a heart-disease logreg model"):
        write_bundle(tmp_path / "out", bundle / WEIGHTS_FILE, wrong_model, CARD, keys.private_key)
    assert list(tmp_path.iterdir()) == []  # no bundle, no staging folder left behind


def test_the_model_card_renders_every_section_of_the_card() -> None:
    card = {
        **CARD,
        "validation": {"cleveland": {"auroc": 0.83, "ece": 0.04}},
        "gate": {"verdict": "pass", "policy": {"min_sites": 3}},
        "privacy": {"cleveland": {"epsilon": 1.5, "delta": 1e-5}},
        "custom_note": "kept",
    }

    text = render_card(card)

    assert text.startswith("# Model card: heart-risk version v7")
    for heading in ("Intended use", "Task and schema", "Sites", "Privacy", "Validation"):
        assert f"## {heading}" in text
    assert "## Release gate" in text and "## Limitations" in text and "## Lineage" in text
    assert "## Custom note" in text and "| cleveland | 0.83 | 0.04 |" in text
    assert text.index("## Intended use") < text.index("## Lineage") < text.index("## Custom")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_names_every_changed_missing_and_added_file(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path
) -> None:
    # Prepare: two files changed, two removed, two added - and, apart, one change of each kind.
    names = sorted(p.name for p in bundle.iterdir() if p.name != SIGNATURE_FILE)
    every = copy_bundle(bundle, tmp_path / "every")
    for name in names[:2]:
        _flip(every / name)
    for name in names[2:]:
        (every / name).unlink()
    for name in ("extra.py", "notes.txt"):
        (every / name).write_text("added\n")
    single = {
        kind: copy_bundle(bundle, tmp_path / kind) for kind in ("changed", "missing", "added")
    }
    _flip(single["changed"] / names[0])
    (single["missing"] / names[0]).unlink()
    (single["added"] / "extra.py").write_text("added\n")

    # Execute
    def refusal(folder: Path) -> str:
        with pytest.raises(SignatureError) as refused:
            verify_directory(folder, keys.public_key)
        return str(refused.value)

    # Assert: each kind of change once, every file named, nothing else (the signature itself
    # is not an added file).
    assert refusal(every) == (
        f"{every}: changed since signing: {names[0]}, {names[1]}; "
        f"missing: {names[2]}, {names[3]}; not signed: extra.py, notes.txt; refuse to use it"
    )
    assert refusal(single["changed"]) == (
        f"{single['changed']}: changed since signing: {names[0]}; refuse to use it"
    )
    assert (
        refusal(single["missing"]) == f"{single['missing']}: missing: {names[0]}; refuse to use it"
    )
    assert refusal(single["added"]) == f"{single['added']}: not signed: extra.py; refuse to use it"


def test_a_symlink_in_a_bundle_is_refused(bundle: Path, keys: ReleaseKeys, tmp_path: Path) -> None:
    """A symlink could point at a file that changes after verification: never followed."""
    copy = copy_bundle(bundle, tmp_path / "swapped")
    outside = tmp_path / "outside.json"
    outside.write_bytes((copy / PREPROCESSING_FILE).read_bytes())
    (copy / PREPROCESSING_FILE).unlink()
    (copy / PREPROCESSING_FILE).symlink_to(outside)  # the same bytes, through a link

    with pytest.raises(SignatureError) as refused:
        verify_directory(copy, keys.public_key)

    assert str(refused.value) == f"{copy}: its files do not match the signature; refuse to use it"


def test_a_folder_the_owners_key_signed_with_another_hash_is_refused(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path
) -> None:
    """verify_directory returns each file's signed sha256: a manifest of other digests (signed
    with model-signing itself, blake2) cannot give them, so it is refused, not read as empty."""
    from model_signing import hashing, signing

    copy = copy_bundle(bundle, tmp_path)
    (copy / SIGNATURE_FILE).unlink()
    config = hashing.Config().use_file_serialization(
        hashing_algorithm="blake2", ignore_paths=[Path(SIGNATURE_FILE)]
    )
    signer = signing.Config().use_elliptic_key_signer(private_key=keys.private_key)
    signer.set_hashing_config(config).sign(copy, copy / SIGNATURE_FILE)

    with pytest.raises(SignatureError, match="refuse to use it"):
        verify_directory(copy, keys.public_key)


@pytest.mark.parametrize("damage", ["payload", "sig", "payloadType"])
def test_an_altered_signature_envelope_is_refused_as_not_verifying(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path, damage: str
) -> None:
    # Prepare: the envelope edited without re-signing: a stray character in a base64 field
    # (a lenient decoder would skip it and read the signed bytes), or another payload type.
    copy = copy_bundle(bundle, tmp_path)
    signature = json.loads((copy / SIGNATURE_FILE).read_text())
    envelope = signature["dsseEnvelope"]
    if damage == "payload":
        envelope["payload"] = "*" + envelope["payload"]
    elif damage == "sig":
        envelope["signatures"][0]["sig"] = "*" + envelope["signatures"][0]["sig"]
    else:
        envelope["payloadType"] = "application/json"
    (copy / SIGNATURE_FILE).write_text(json.dumps(signature))

    # Execute
    with pytest.raises(SignatureError) as refused:
        verify_directory(copy, keys.public_key)

    # Assert: model-signing's own reader skips the stray character; fedcare's does not.
    assert str(refused.value).startswith(
        f"{copy}: its signature does not verify with {keys.public_key}"
    )
    if damage == "payloadType":  # model-signing refuses this one itself: the full reason
        assert str(refused.value).endswith(
            "(signed by another key, or the signature was altered); refuse to use it"
        )


def test_signing_and_verifying_refuse_what_is_not_a_folder_signature_or_key(
    bundle: Path, keys: ReleaseKeys, tmp_path: Path
) -> None:
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    absent = tmp_path / "absent.pem"
    cases = [
        (lambda: verify_directory(tmp_path / "nowhere", keys.public_key), "{}: not a folder"),
        (
            lambda: verify_directory(unsigned, keys.public_key),
            f"{unsigned}: unsigned (no {SIGNATURE_FILE}); refuse to use it",
        ),
        (
            lambda: verify_directory(bundle, absent),
            f"{absent}: cannot read the public key (No such file or directory)",
        ),
        (lambda: verify_directory(bundle, garbage), f"{garbage}: not an EC public key (PEM)"),
        (
            lambda: sign_directory(unsigned, absent),
            f"{absent}: cannot read the release key (No such file or directory)",
        ),
        (
            lambda: sign_directory(unsigned, garbage),
            f"{garbage}: not an EC private key (PEM, P-256/384/521); make one with "
            "'fedcare pki release-key'",
        ),
    ]
    for call, message in cases:
        with pytest.raises(SignatureError) as refused:
            call()
        assert str(refused.value) == message.format(tmp_path / "nowhere")
    assert not (unsigned / SIGNATURE_FILE).exists()
