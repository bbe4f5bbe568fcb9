"""The signed ledger head, promise by promise: its exact canonical form, its range checks, the
site keys it is signed and verified with, and what the coordinator keeps and refuses.

Heads are built and signed here directly (no Flower, no training): each test is in-process and
fast, and states one promise of :mod:`fedcare.privacy.ledger_signing` or
:mod:`fedcare.server.ledger_heads`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flwr.app import ConfigRecord
from opacus.accountants import RDPAccountant

from fedcare import messages as keys
from fedcare.errors import ConfigError
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.privacy.ledger_signing import (
    HEAD_DELTA,
    LedgerHead,
    LedgerSignatureError,
    current_head,
    load_private_key,
    load_public_key,
    sign_head,
    verify_head,
)
from fedcare.server.ledger_heads import HEADS_FILE, NO_HEAD, LedgerHeads, went_back

CHAIN_A, CHAIN_B = "a" * 64, "b" * 64
LOGGER = "fedcare.server.ledger_heads"


def head(entries: int, epsilon: float, resets: int = 0, chain: str = CHAIN_A) -> LedgerHead:
    return LedgerHead("va", entries, chain, epsilon, resets, "2026-01-01T00:00:00Z")


def private_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def private_openssh(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def public_openssh(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def va(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    """va's registered public key file (OpenSSH, as ``fedcare site keygen`` writes it)."""
    path = tmp_path / "va.pub"
    path.write_bytes(public_openssh(ec_key))
    return path


def reply(ledger_head: LedgerHead, key: ec.EllipticCurvePrivateKey) -> ConfigRecord:
    text, signature = sign_head(ledger_head, key)
    return ConfigRecord({keys.LEDGER_HEAD: text, keys.LEDGER_SIGNATURE: signature})


# --- the head itself -----------------------------------------------------------------------


def test_a_head_is_signed_as_compact_key_sorted_json() -> None:
    # Prepare
    ledger_head = LedgerHead("va", 2, "ab", 0.5, 1, "2026-01-01T00:00:00Z")

    # Execute
    text = ledger_head.canonical()

    # Assert
    assert text == (
        b'{"chain":"ab","entries":2,"epsilon":0.5,"resets":1,'
        b'"site":"va","time":"2026-01-01T00:00:00Z"}'
    )


def test_a_head_with_a_non_finite_count_is_never_signed_as_non_standard_json(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    # Prepare: a count that is not a number (the dataclass does not check types)
    broken = LedgerHead("va", math.nan, CHAIN_A, 1.0, 0, "t")  # type: ignore[arg-type]  # on purpose

    # Execute / Assert: strict JSON refuses it rather than writing NaN
    with pytest.raises(ValueError, match="not JSON compliant"):
        sign_head(broken, ec_key)


@pytest.mark.parametrize(
    "field",
    [{"entries": -1}, {"resets": -1}, {"epsilon": -0.1}, {"epsilon": math.nan}],
    ids=["negative-entries", "negative-resets", "negative-epsilon", "nan-epsilon"],
)
def test_a_head_with_a_count_or_epsilon_out_of_range_is_refused(field: dict[str, Any]) -> None:
    # Prepare
    payload = head(3, 1.0).to_json() | field

    # Execute / Assert
    with pytest.raises(ValueError, match=r"^ledger head out of range: \{'site': 'va'"):
        LedgerHead.from_json(payload)


def test_a_head_at_the_bottom_of_every_range_is_accepted() -> None:
    # Prepare: an empty ledger that never reset, and one that spent a fraction of ε
    payloads = [head(0, 0.0).to_json(), head(1, 0.5).to_json()]

    # Execute
    heads = [LedgerHead.from_json(payload) for payload in payloads]

    # Assert
    assert heads == [head(0, 0.0), head(1, 0.5)]


def test_a_validly_signed_head_out_of_range_is_the_same_opaque_refusal(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    # Prepare: the site's own key signed a negative count
    text, signature = sign_head(head(-1, 1.0), ec_key)

    # Execute / Assert
    with pytest.raises(LedgerSignatureError, match=r"^ledger head signature invalid$"):
        verify_head(text, signature, ec_key.public_key())


def test_the_head_states_the_ledger_in_state_dir_at_the_reference_delta(tmp_path: Path) -> None:
    # Prepare: two DP events; ε computed here with Opacus directly at δ = 1e-5
    ledger = PrivacyLedger(tmp_path)
    for round_ in (1, 2):
        ledger.append(PrivacyEvent("run", round_, 1.1, 0.05, 20, 1e-3, 1.0, "2026-01-01T00:00:00Z"))
    reference = RDPAccountant()
    reference.history = [(1.1, 0.05, 20), (1.1, 0.05, 20)]

    # Execute
    ledger_head = current_head(tmp_path, "va")

    # Assert: the site's own δ (1e-3 here) does not enter the head
    assert HEAD_DELTA == 1e-5
    assert ledger_head.site == "va" and ledger_head.entries == 2 and ledger_head.resets == 0
    assert ledger_head.chain == ledger.snapshot()[1]
    assert ledger_head.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """The machine's local zone is UTC+3 for the test (POSIX TZ: no tz database needed)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "FED-3")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_the_head_time_is_utc_to_the_second_whatever_the_local_zone(tmp_path: Path) -> None:
    # Prepare
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)

    # Execute
    stamp = current_head(tmp_path, "va").time

    # Assert
    after = dt.datetime.now(dt.UTC)
    assert len(stamp) == 20 and stamp.endswith("Z"), stamp
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= parsed <= after


# --- site keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [private_openssh, private_pem, lambda key: b"\n  " + private_openssh(key)],
    ids=["openssh", "pem", "openssh-after-blank-lines"],
)
def test_a_site_private_key_loads_from_openssh_or_pem(
    encode: Any, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    # Prepare
    path = tmp_path / "site.key"
    path.write_bytes(encode(ec_key))

    # Execute
    loaded = load_private_key(path)

    # Assert: the same key (it signs what the registered public key verifies)
    text, signature = sign_head(head(1, 1.0), loaded)
    assert verify_head(text, signature, ec_key.public_key()) == head(1, 1.0)


@pytest.mark.parametrize(
    "encode",
    [public_openssh, public_pem, lambda key: b"\n  " + public_pem(key)],
    ids=["openssh", "pem", "pem-after-blank-lines"],
)
def test_a_registered_public_key_loads_from_openssh_or_pem(
    encode: Any, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    # Prepare
    path = tmp_path / "site.pub"
    path.write_bytes(encode(ec_key))
    text, signature = sign_head(head(1, 1.0), ec_key)

    # Execute
    loaded = load_public_key(path)

    # Assert
    assert verify_head(text, signature, loaded) == head(1, 1.0)


def test_a_site_key_that_is_not_ec_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    # Prepare: an RSA key pair where the site key should be
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp_path / "site.key", tmp_path / "site.pub"
    private.write_bytes(private_openssh(rsa_key))
    public.write_bytes(public_openssh(rsa_key))

    # Execute / Assert
    with pytest.raises(PrivacyError) as refused_private:
        load_private_key(private)
    with pytest.raises(PrivacyError) as refused_public:
        load_public_key(public)
    assert str(refused_private.value) == (
        f"{private}: the site key must be an EC key (fedcare site keygen)"
    )
    assert str(refused_public.value) == f"{public}: a site's public key must be an EC key"


# --- the coordinator's memory ----------------------------------------------------------------


def test_a_head_level_with_or_ahead_of_the_kept_one_did_not_go_back() -> None:
    kept = head(2, 1.0)
    assert went_back(kept, head(2, 1.0)) is None
    assert went_back(kept, head(3, 1.0, chain=CHAIN_B)) is None


def test_a_lower_epsilon_is_named_with_both_values() -> None:
    assert went_back(head(2, 1.0), head(3, 0.5)) == "its ledger's ε is 0.5, 1 before"


def test_the_same_head_sent_again_is_accepted(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # Prepare
    heads = LedgerHeads(tmp_path / HEADS_FILE, {"va": va})
    assert heads.check("va", reply(head(2, 1.0), ec_key)) is None

    # Execute / Assert
    assert heads.check("va", reply(head(2, 1.0), ec_key)) is None
    assert heads.latest("va") == head(2, 1.0)


def test_the_kept_heads_let_anyone_verify_each_site_statement_again(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # Prepare
    store = tmp_path / HEADS_FILE
    assert LedgerHeads(store, {"va": va}).check("va", reply(head(2, 1.0), ec_key)) is None

    # Execute: only the file and the registered key
    entry = json.loads(store.read_text(encoding="utf-8"))["va"]
    text = LedgerHead.from_json(entry["head"]).canonical().decode("utf-8")

    # Assert
    assert verify_head(text, bytes.fromhex(entry["signature"]), load_public_key(va)) == head(2, 1.0)


def test_a_first_head_that_already_counts_a_reset_is_logged_as_declared(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    heads = LedgerHeads(tmp_path / HEADS_FILE, {"va": va})

    # Execute
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reason = heads.check("va", reply(head(0, 0.0, resets=1), ec_key))

    # Assert
    assert reason is None
    assert [r.getMessage() for r in caplog.records] == ["site va declared a ledger reset (1)"]


def test_a_declared_reset_that_went_back_is_accepted_and_logged_with_how(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    heads = LedgerHeads(tmp_path / HEADS_FILE, {"va": va})
    assert heads.check("va", reply(head(2, 1.0), ec_key)) is None

    # Execute
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reason = heads.check("va", reply(head(0, 0.0, resets=1), ec_key))

    # Assert
    assert reason is None
    assert [r.getMessage() for r in caplog.records] == [
        "site va declared a ledger reset (1): its ledger holds 0 event(s), 2 before"
    ]
    assert heads.latest("va") == head(0, 0.0, resets=1)


def test_one_declared_reset_does_not_excuse_a_later_rollback(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # Prepare: a reset declared and accepted, then one more event spent
    heads = LedgerHeads(tmp_path / HEADS_FILE, {"va": va})
    assert heads.check("va", reply(head(2, 1.0), ec_key)) is None
    assert heads.check("va", reply(head(0, 0.0, resets=1), ec_key)) is None
    assert heads.check("va", reply(head(1, 0.5, resets=1, chain=CHAIN_B), ec_key)) is None

    # Execute: the ledger thrown away again, the reset count unchanged
    reason = heads.check("va", reply(head(0, 0.0, resets=1), ec_key))

    # Assert
    assert reason == (
        "ledger went back: its ledger holds 0 event(s), 1 before, with no declared reset"
    )
    assert heads.latest("va") == head(1, 0.5, resets=1, chain=CHAIN_B)


def test_a_head_or_signature_of_the_wrong_type_is_no_head(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # Prepare
    heads = LedgerHeads(tmp_path / HEADS_FILE, {"va": va})
    text, signature = sign_head(head(1, 1.0), ec_key)
    wrong = [
        ConfigRecord({keys.LEDGER_HEAD: text, keys.LEDGER_SIGNATURE: signature.hex()}),
        ConfigRecord({keys.LEDGER_HEAD: text.encode("utf-8"), keys.LEDGER_SIGNATURE: signature}),
        ConfigRecord({keys.LEDGER_SIGNATURE: signature}),
    ]

    # Execute / Assert
    assert [heads.check("va", record) for record in wrong] == [NO_HEAD] * 3
    assert heads.latest("va") is None


def test_a_site_refused_at_the_key_says_which_key_problem(
    tmp_path: Path, va: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # Prepare
    missing = tmp_path / "gone.pub"
    heads = LedgerHeads(tmp_path / HEADS_FILE, {"va": va, "cleveland": missing})
    other = ec.generate_private_key(ec.SECP384R1())

    # Execute
    reasons = [
        heads.check("hungarian", reply(head(1, 1.0), ec_key)),
        heads.check("cleveland", reply(head(1, 1.0), ec_key)),
        heads.check("va", reply(head(1, 1.0), other)),
    ]

    # Assert
    assert reasons == [
        "site hungarian has no registered public key",
        f"the registered public key of site cleveland cannot be read ({missing})",
        "ledger head signature invalid",
    ]
    assert not (tmp_path / HEADS_FILE).exists()


@pytest.mark.parametrize(
    "stored",
    [
        {"va": {"head": head(-1, 1.0).to_json(), "signature": ""}},
        {"va": {"signature": ""}},
        {"va": "not an entry"},
        ["va"],
    ],
    ids=["head-out-of-range", "no-head", "entry-not-an-object", "not-a-mapping"],
)
def test_a_heads_file_with_a_bad_entry_is_refused_at_startup_with_the_fix(
    tmp_path: Path, stored: Any
) -> None:
    # Prepare
    store = tmp_path / HEADS_FILE
    store.write_text(json.dumps(stored), encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ConfigError) as refused:
        LedgerHeads(store, {})
    assert str(refused.value) == (
        f"{store}: the sites' ledger heads are unreadable; restore it from backup"
    )
