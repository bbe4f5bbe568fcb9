"""Write a signed release bundle (the model owner's side of :mod:`fedcare.bundle`).

:func:`write_bundle` builds the whole bundle in a temporary folder beside the destination,
fsyncs every file, signs it, checks it loads with the matching public key, and only then renames
it into place: a reader (or a crash) sees no bundle or a complete, signed one, never half of one.
The model card is written twice: ``model_card.json`` for programs and ``MODEL_CARD.md`` for
people, rendered generically from whatever keys the card holds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from fedcare.bundle import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    PREPROCESSING_FILE,
    WEIGHTS_FILE,
    BundleError,
    load_bundle,
)
from fedcare.privacy.signing import SignatureError, sign_directory

# Known sections of a model card, in the order a reader wants them; any other key follows.
CARD_SECTIONS: tuple[tuple[str, str], ...] = (
    ("intended_use", "Intended use"),
    ("task", "Task and schema"),
    ("schema", "Schema"),
    ("inputs", "Inputs"),
    ("sites", "Sites"),
    ("privacy", "Privacy"),
    ("validation", "Validation"),
    ("gate", "Release gate"),
    ("limitations", "Limitations"),
    ("lineage", "Lineage"),
)
_HEADER_KEYS = ("name", "version", "title", "summary", "released_at")


def write_bundle(
    out_dir: Path,
    weights_path: Path,
    preprocessing: Mapping[str, Any],
    card: Mapping[str, Any],
    private_key: Path,
) -> Path:
    """Write and sign the bundle ``out_dir`` (which must not exist yet); returns it.

    ``preprocessing``: see :func:`fedcare.bundle.preprocessing_record`. ``card``: any JSON
    object; its ``name`` (the API's model name) and ``version`` are read by the server, and
    default to the task's name and "1". Raises :class:`BundleError` when the result would not
    load (weights of another model, bad statistics), so no unusable release is ever signed.
    """
    if out_dir.exists():
        raise BundleError(f"{out_dir}: already exists; a release is never overwritten")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    card = {"name": preprocessing.get("task"), "version": "1", **card}
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copyfile(weights_path, staging / WEIGHTS_FILE)
        _write_text(staging / PREPROCESSING_FILE, _json(preprocessing))
        _write_text(staging / CARD_FILE, _json(card))
        _write_text(staging / CARD_MARKDOWN_FILE, render_card(card))
        try:
            signature = sign_directory(staging, private_key)
        except SignatureError as exc:
            raise BundleError(str(exc)) from None
        for path in (staging / WEIGHTS_FILE, signature):
            _fsync(path)
        _check_loads(staging, private_key, out_dir)
        os.chmod(staging, 0o755)  # a release is public; mkdtemp made it 0700
        _fsync(staging)
        if out_dir.exists():  # appeared while the bundle was being built
            raise BundleError(f"{out_dir}: already exists; a release is never overwritten")
        try:
            os.rename(staging, out_dir)
        except OSError as exc:
            raise BundleError(f"{out_dir}: cannot put the release there ({exc.strerror})") from None
        _fsync(out_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _check_loads(staging: Path, private_key: Path, out_dir: Path) -> None:
    key = serialization.load_pem_private_key(private_key.read_bytes(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.TemporaryDirectory() as folder:
        public_path = Path(folder) / "release.pub"
        public_path.write_bytes(public)
        try:
            load_bundle(staging, public_path)
        except BundleError as exc:
            reason = str(exc).replace(str(staging), str(out_dir))
            raise BundleError(f"not released: {reason}") from None


def _json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def render_card(card: Mapping[str, Any]) -> str:
    """The model card as Markdown: a title, then one section per key (known sections first, in
    :data:`CARD_SECTIONS` order); dicts of records become tables, lists become bullets."""
    title = f"Model card: {card.get('name', 'model')} version {card.get('version', '?')}"
    lines = [f"# {title}", ""]
    for key in ("title", "summary", "released_at"):
        if key in card:
            lines += [f"**{_title(key)}:** {_scalar(card[key])}", ""]
    known = [key for key, _ in CARD_SECTIONS if key in card]
    others = sorted(k for k in card if k not in dict(CARD_SECTIONS) and k not in _HEADER_KEYS)
    titles = dict(CARD_SECTIONS)
    for key in [*known, *others]:
        lines += [f"## {titles.get(key, _title(key))}", ""]
        lines += _render(card[key], level=3)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _title(key: str) -> str:
    text = key.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _render(value: Any, level: int) -> list[str]:
    if _is_scalar(value):
        return [_scalar(value)]
    if isinstance(value, list):
        if all(_is_scalar(item) for item in value):
            return [f"- {_scalar(item)}" for item in value] or ["-"]
        if all(isinstance(item, dict) for item in value):
            return _table([(str(i + 1), item) for i, item in enumerate(value)], "#")
        return ["```json", json.dumps(value, indent=2, sort_keys=True), "```"]
    if isinstance(value, dict):
        if all(_is_scalar(v) for v in value.values()):
            rows = [f"| {_scalar(k)} | {_scalar(v)} |" for k, v in value.items()]
            return ["| | |", "|---|---|", *rows] if rows else ["-"]
        if all(
            isinstance(v, dict) and all(_is_scalar(x) for x in v.values()) for v in value.values()
        ):
            return _table(list(value.items()), "")
        out: list[str] = []
        for key, item in value.items():
            if _is_scalar(item):
                out += [f"**{_title(str(key))}:** {_scalar(item)}", ""]
            else:
                out += [f"{'#' * min(level, 6)} {_title(str(key))}", ""]
                out += _render(item, level + 1)
                out.append("")
        return out
    return [_scalar(value)]


def _table(rows: list[tuple[str, Any]], corner: str) -> list[str]:
    columns: list[str] = []
    for _, record in rows:
        columns += [c for c in record if c not in columns]
    if not all(all(_is_scalar(v) for v in record.values()) for _, record in rows):
        return ["```json", json.dumps(dict(rows), indent=2, sort_keys=True), "```"]
    head = f"| {corner} | " + " | ".join(_scalar(c) for c in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    body = [
        f"| {_scalar(key)} | " + " | ".join(_scalar(record.get(c)) for c in columns) + " |"
        for key, record in rows
    ]
    return [head, rule, *body]
