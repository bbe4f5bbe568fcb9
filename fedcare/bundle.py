"""A signed release bundle: read, verify and use a released model (core: sites use it too).

A bundle is a folder the model owner writes (``fedcare registry release``) and signs with the
owner's release key (``model-signing``, :mod:`fedcare.privacy.signing`):

* ``model.safetensors``: the global weights (never pickle: a released model cannot carry code);
* ``preprocessing.json``: the task, the model architecture, the raw inputs with their allowed
  ranges, and the standardisation statistics the federation computed;
* ``model_card.json`` and ``MODEL_CARD.md``: the model card (the owner's evidence);
* ``model.sig``: the sigstore bundle signing every other file.

:func:`load_bundle` verifies the signature first, then checks that the bytes it parses are the
bytes that were signed (no window between the check and the read), and refuses with one line
naming the bundle and what is wrong. What it returns takes raw clinical values, exactly as the
inference API receives them, and encodes them with the task's own ``encode_inputs``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from fedcare.errors import FedcareError
from fedcare.privacy.signing import SIGNATURE_FILE, SignatureError, verify_directory

if TYPE_CHECKING:
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
PREPROCESSING_FILE = "preprocessing.json"
CARD_FILE = "model_card.json"
CARD_MARKDOWN_FILE = "MODEL_CARD.md"
BUNDLE_FILES = (WEIGHTS_FILE, PREPROCESSING_FILE, CARD_FILE, CARD_MARKDOWN_FILE, SIGNATURE_FILE)
INPUT_DATATYPE = "FP32"  # what the model metadata declares for every input
# An Open Inference Protocol model name travels in URL paths: keep it to safe characters.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BundleError(FedcareError):
    """A release bundle is unsigned, tampered with, signed by another key, or malformed."""


class InvalidInput(ValueError):
    """One input of a request breaks the model's declared inputs; names the input."""

    def __init__(self, input_name: str, reason: str) -> None:
        super().__init__(f"input {input_name!r}: {reason}")
        self.input_name = input_name
        self.reason = reason


@dataclass(frozen=True)
class InputSpec:
    """One raw input the model takes: its name, wire datatype and allowed values."""

    name: str
    datatype: str
    minimum: float
    maximum: float
    levels: tuple[float, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "levels": list(self.levels) if self.levels is not None else None,
        }


def task_inputs(task: str) -> tuple[tuple[str, ...], dict[str, InputSpec], tuple[str, ...]]:
    """The task's raw inputs (API order), their rules and its feature names, from the task module
    (``MODEL_INPUTS``, ``INPUT_RULES``, ``FEATURE_NAMES``)."""
    module = _task_module(task)
    names = tuple(module.MODEL_INPUTS)
    specs = {
        name: InputSpec(
            name,
            INPUT_DATATYPE,
            float(rule.minimum),
            float(rule.maximum),
            tuple(float(v) for v in rule.levels) if rule.levels is not None else None,
        )
        for name, rule in module.INPUT_RULES.items()
    }
    return names, specs, tuple(module.FEATURE_NAMES)


def preprocessing_record(
    task: str,
    model: str,
    seed: int,
    mean: list[float],
    std: list[float],
    source: str = "federation",
    **extra: Any,
) -> dict[str, Any]:
    """The ``preprocessing.json`` of a bundle for ``task``: inputs and their rules from the task,
    the federation's standardisation statistics, and any ``extra`` keys (e.g. privacy spent)."""
    names, specs, features = task_inputs(task)
    return {
        "task": task,
        "model": model,
        "seed": seed,
        "inputs": list(names),
        "input_rules": {name: specs[name].to_json() for name in names},
        "features": list(features),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "source": source,
        **extra,
    }


@dataclass(frozen=True)
class ReleasedModel:
    """A verified release: takes raw clinical values, returns the probability of the outcome."""

    name: str
    version: str
    task: str
    model_name: str
    inputs: tuple[InputSpec, ...]
    card: dict[str, Any]
    preprocessing: dict[str, Any]
    mean: np.ndarray
    std: np.ndarray
    module: nn.Module
    path: Path

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def check_inputs(self, columns: Mapping[str, Any], max_batch: int | None = None) -> int:
        """Raise :class:`InvalidInput` naming the first input that is missing, unknown, not a
        flat vector of numbers, of another length than the others, non-finite, out of range or
        not one of its levels, or a batch over ``max_batch``. Returns the batch size."""
        return int(self._checked(columns, max_batch).shape[1])

    def predict_proba(self, columns: Mapping[str, Any], max_batch: int | None = None) -> np.ndarray:
        """The model's probability of the positive class for each row (float32, shape (n,)),
        after :meth:`check_inputs` (with ``max_batch``); preprocessing = the task's
        ``encode_inputs``, then standardisation with the bundle's (the federation's) mean and
        std."""
        import torch

        matrix = self._checked(columns, max_batch)
        raw = {name: matrix[i] for i, name in enumerate(self.input_names)}
        scaled = ((self._encode(raw) - self.mean) / self.std).astype(np.float32)
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(scaled)).reshape(-1)
            return torch.sigmoid(logits).numpy().astype(np.float32)

    def _checked(self, columns: Mapping[str, Any], max_batch: int | None) -> np.ndarray:
        """The inputs as one float64 matrix (one row per input, ``input_names`` order), every
        rule checked at once; when any fails, :meth:`_refuse` names the first."""
        names = self.input_names
        if len(columns) == len(names):
            try:
                arrays = [np.asarray(columns[name]) for name in names]
            except KeyError:  # an unknown input in place of a known one
                arrays = []
            if arrays and all(_flat_numbers(a) for a in arrays):
                rows = arrays[0].shape[0]
                if (
                    0 < rows <= (max_batch if max_batch is not None else rows)
                    and all(a.shape[0] == rows for a in arrays)
                    and self._rules.admit(matrix := _stack(arrays, rows))
                ):
                    return matrix
        self._refuse(columns, max_batch)

    def _refuse(self, columns: Mapping[str, Any], max_batch: int | None) -> NoReturn:
        """Raise :class:`InvalidInput` for the first rule ``columns`` breaks, input by input in
        API order."""
        unknown = sorted(set(columns) - set(self.input_names))
        if unknown:
            raise InvalidInput(
                unknown[0], f"not an input of this model; inputs: {', '.join(self.input_names)}"
            )
        rows: int | None = None
        for spec in self.inputs:
            if spec.name not in columns:
                raise InvalidInput(spec.name, "missing; every input is required")
            values = _as_vector(spec.name, columns[spec.name])
            if rows is None:
                rows = values.shape[0]
                if rows == 0:
                    raise InvalidInput(spec.name, "empty; send at least one row")
                if max_batch is not None and rows > max_batch:
                    raise InvalidInput(
                        spec.name, f"batch of {rows} rows exceeds the maximum of {max_batch}"
                    )
            elif values.shape[0] != rows:
                raise InvalidInput(
                    spec.name, f"has {values.shape[0]} rows but {self.inputs[0].name} has {rows}"
                )
            _check_values(spec, values)
        raise AssertionError("_checked refused inputs that break no rule")  # pragma: no cover

    @cached_property
    def _encode(self) -> Any:
        """The task's ``encode_inputs``."""
        return _task_module(self.task).encode_inputs

    @cached_property
    def _rules(self) -> _Rules:
        return _Rules.of(self.inputs)


@dataclass(frozen=True)
class _Rules:
    """Every input's rules as arrays, to check a whole request in a few numpy operations
    (the same rules :func:`_check_values` applies one input at a time)."""

    minimum: np.ndarray  # (inputs, 1)
    maximum: np.ndarray  # (inputs, 1)
    leveled: np.ndarray  # indices of the inputs with levels
    levels: np.ndarray  # (leveled, 1, most levels), padded with NaN (equal to nothing)

    @classmethod
    def of(cls, inputs: tuple[InputSpec, ...]) -> _Rules:
        leveled = [i for i, spec in enumerate(inputs) if spec.levels is not None]
        most = max((len(inputs[i].levels or ()) for i in leveled), default=0)
        levels = np.full((len(leveled), 1, most), np.nan)
        for row, i in enumerate(leveled):
            found = inputs[i].levels or ()
            levels[row, 0, : len(found)] = found
        return cls(
            np.array([[spec.minimum] for spec in inputs]),
            np.array([[spec.maximum] for spec in inputs]),
            np.array(leveled, dtype=np.intp),
            levels,
        )

    def admit(self, matrix: np.ndarray) -> bool:
        """Whether every value is finite, within its input's range and one of its levels."""
        if not (np.isfinite(matrix).all() and (matrix >= self.minimum).all()):
            return False
        if not (matrix <= self.maximum).all():
            return False
        if self.leveled.size == 0:
            return True
        return bool((matrix[self.leveled][:, :, None] == self.levels).any(axis=2).all())


def _flat_numbers(array: np.ndarray) -> bool:
    return (
        array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)
    ) and array.dtype.kind in "biuf"


def _stack(arrays: list[np.ndarray], rows: int) -> np.ndarray:
    matrix = np.empty((len(arrays), rows), dtype=np.float64)
    for i, array in enumerate(arrays):
        matrix[i] = array.reshape(rows)
    return matrix


def verify_bundle(path: Path, public_key: Path) -> dict[str, str]:
    """Check the bundle's signature with ``public_key`` (the owner's ``owner-release.pub``);
    returns the signed sha256 of each file. Raises :class:`BundleError`, one line."""
    for name in BUNDLE_FILES:
        if not (path / name).is_file():
            what = "unsigned" if name == SIGNATURE_FILE else "incomplete"
            raise BundleError(f"{path}: {what} bundle, {name} is missing; refuse to use it")
    try:
        digests: dict[str, str] = verify_directory(path, public_key)
    except SignatureError as exc:
        raise BundleError(str(exc)) from None
    return digests


def load_bundle(path: Path, public_key: Path) -> ReleasedModel:
    """Verify the bundle, then build the model it holds from the bytes that were signed."""
    digests = verify_bundle(path, public_key)
    blobs = {
        name: _signed_bytes(path, name, digests)
        for name in (WEIGHTS_FILE, PREPROCESSING_FILE, CARD_FILE)
    }
    preprocessing = _json_object(path, PREPROCESSING_FILE, blobs[PREPROCESSING_FILE])
    card = _json_object(path, CARD_FILE, blobs[CARD_FILE])
    task = _field(path, PREPROCESSING_FILE, preprocessing, "task", str)
    model_name = _field(path, PREPROCESSING_FILE, preprocessing, "model", str)
    names, _, features = _known_task(path, task)
    declared = _field(path, PREPROCESSING_FILE, preprocessing, "inputs", list)
    if tuple(declared) != names:
        raise BundleError(
            f"{path / PREPROCESSING_FILE}: inputs {declared} differ from task {task!r}'s "
            f"{list(names)}; the bundle was made for another version of the task"
        )
    rules = _field(path, PREPROCESSING_FILE, preprocessing, "input_rules", dict)
    inputs = tuple(_input_spec(path, name, rules.get(name)) for name in names)
    if tuple(_field(path, PREPROCESSING_FILE, preprocessing, "features", list)) != features:
        raise BundleError(f"{path / PREPROCESSING_FILE}: features differ from task {task!r}'s")
    mean = _statistic(path, preprocessing, "mean", len(features), positive=False)
    std = _statistic(path, preprocessing, "std", len(features), positive=True)
    module = _build_module(
        path, task, model_name, int(preprocessing.get("seed", 0)), blobs[WEIGHTS_FILE]
    )
    name = str(card.get("name", task))
    if not MODEL_NAME.match(name):
        raise BundleError(f"{path / CARD_FILE}: model name {name!r} is not URL-safe")
    return ReleasedModel(
        name=name,
        version=str(card.get("version", "1")),
        task=task,
        model_name=model_name,
        inputs=inputs,
        card=card,
        preprocessing=preprocessing,
        mean=mean,
        std=std,
        module=module,
        path=path,
    )


def _task_module(task: str) -> Any:
    """The module of the installed task package that declares ``task`` (its entry point's)."""
    from fedcare.tasks import task_module

    return task_module(task)


def _known_task(
    path: Path, task: str
) -> tuple[tuple[str, ...], dict[str, InputSpec], tuple[str, ...]]:
    from fedcare.tasks.names import task_names

    if task not in task_names():
        raise BundleError(
            f"{path / PREPROCESSING_FILE}: task {task!r} is not installed here "
            f"(installed: {', '.join(task_names()) or 'none'}); install the task's package "
            "(README, 'Task plugins') or upgrade fedcare"
        )
    return task_inputs(task)


def _signed_bytes(path: Path, name: str, digests: dict[str, str]) -> bytes:
    data = (path / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != digests.get(name):
        raise BundleError(f"{path}: {name} changed while it was read; refuse to use it")
    return data


def _json_object(path: Path, name: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path / name}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BundleError(f"{path / name}: expected a JSON object")
    return value


def _field(path: Path, name: str, record: dict[str, Any], key: str, kind: type) -> Any:
    value = record.get(key)
    if not isinstance(value, kind):
        raise BundleError(f"{path / name}: {key!r} missing or not a {kind.__name__}")
    return value


def _input_spec(path: Path, name: str, rule: Any) -> InputSpec:
    try:
        levels = rule.get("levels")
        spec = InputSpec(
            name,
            str(rule.get("datatype", INPUT_DATATYPE)),
            float(rule["minimum"]),
            float(rule["maximum"]),
            tuple(float(v) for v in levels) if levels is not None else None,
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        raise BundleError(
            f"{path / PREPROCESSING_FILE}: input_rules[{name!r}] needs minimum and maximum"
        ) from None
    return spec


def _statistic(
    path: Path, record: dict[str, Any], key: str, size: int, positive: bool
) -> np.ndarray:
    values = record.get(key)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    ok = array.shape == (size,) and bool(np.isfinite(array).all())
    if ok and positive:
        ok = bool((array > 0).all())
    if not ok:
        need = "positive " if positive else ""
        raise BundleError(
            f"{path / PREPROCESSING_FILE}: {key!r} must be {size} finite {need}numbers"
        )
    return array


def _build_module(path: Path, task: str, model_name: str, seed: int, weights: bytes) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors_bytes

    from fedcare.tasks import ModelName, get_task

    try:
        architecture = ModelName(model_name)
    except ValueError:
        raise BundleError(
            f"{path / PREPROCESSING_FILE}: model {model_name!r} is not one of "
            f"{', '.join(m.value for m in ModelName)}"
        ) from None
    module = get_task(task).build_model(architecture, seed)
    try:
        module.load_state_dict(load_safetensors_bytes(weights), strict=True)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"{path / WEIGHTS_FILE}: not weights of a {task} {model_name} model ({first})"
        ) from None
    module.eval()
    return module


def _as_vector(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidInput(name, f"shape {list(array.shape)}; expected [n] or [n, 1]")
    if array.dtype.kind not in "biuf":
        raise InvalidInput(name, f"datatype {array.dtype}; expected numbers")
    return array.astype(np.float64)


def _check_values(spec: InputSpec, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        raise InvalidInput(spec.name, f"row {int(np.argmin(finite))} is not a finite number")
    outside = (values < spec.minimum) | (values > spec.maximum)
    if outside.any():
        bounds = f"[{_num(spec.minimum)}, {_num(spec.maximum)}]"
        raise InvalidInput(spec.name, f"row {int(np.argmax(outside))} is outside {bounds}")
    if spec.levels is not None:
        allowed = np.isin(values, np.asarray(spec.levels))
        if not allowed.all():
            levels = ", ".join(_num(v) for v in spec.levels)
            raise InvalidInput(
                spec.name, f"row {int(np.argmin(allowed))} is not one of {{{levels}}}"
            )


def _num(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)
