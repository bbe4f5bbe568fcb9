"""Privacy spending as data: one immutable event per noisy release at a site.

Modelled on google/differential-privacy's ``DpEvent``: the ledger stores what was done
(sampling rate, noise, steps), never a running epsilon, so epsilon can be recomputed at any time,
with any accountant, across runs and restarts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fedcare.errors import FedcareError

EVENT_KIND = "dp-sgd"
NON_PRIVATE_KIND = "non-private"
# One release of a Gaussian mechanism on the whole dataset (the federation's preprocessing
# statistics, fedcare.feature_stats): noise multiplier σ = noise std / L2 sensitivity, recorded
# as sample rate 1 and one step, which is exactly how the accountants analyse it.
GAUSSIAN_KIND = "gaussian"


@dataclass(frozen=True)
class PrivacyEvent:
    """One noisy release that left (or was about to leave) the site.

    ``kind == "dp-sgd"``: one round of local DP-SGD training. ``kind == "non-private"`` records
    a release without DP noise: its epsilon is infinite, so a ledger that holds one can never be
    reported as private. ``kind == "gaussian"``: one Gaussian mechanism on all the site's rows
    (``sample_rate`` 1, ``steps`` 1, ``max_grad_norm`` holds the L2 sensitivity); anything else
    would be accounted as a different mechanism from the one that ran, so it is refused.
    """

    run_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    max_grad_norm: float
    time: str
    kind: str = EVENT_KIND

    def __post_init__(self) -> None:
        if self.kind not in (EVENT_KIND, NON_PRIVATE_KIND, GAUSSIAN_KIND):
            raise FedcareError(f"privacy event kind {self.kind!r} is unknown")
        if self.kind == GAUSSIAN_KIND and (
            self.sample_rate != 1.0 or self.steps != 1 or self.noise_multiplier <= 0
        ):
            raise FedcareError(
                f"a gaussian privacy event needs sample_rate 1, steps 1 and noise > 0: {self}"
            )
        if self.steps < 0 or not 0.0 <= self.sample_rate <= 1.0 or self.noise_multiplier < 0:
            raise FedcareError(f"privacy event out of range: {self}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> PrivacyEvent:
        return cls(
            run_id=str(payload["run_id"]),
            round=int(payload["round"]),
            noise_multiplier=float(payload["noise_multiplier"]),
            sample_rate=float(payload["sample_rate"]),
            steps=int(payload["steps"]),
            delta=float(payload["delta"]),
            max_grad_norm=float(payload["max_grad_norm"]),
            time=str(payload["time"]),
            kind=str(payload["kind"]),
        )
