"""Did a run train? Per site, from the coordinator's round records (``rounds.json``).

A site trained in a round when the coordinator accepted its update: the round records the site's
training metric (its train loss, or its ε under DP) and neither a refusal nor a rejected update
for it. A run in which no site trained in any round learned nothing - the model is still round
0's - and must not look like a success: both ``fedcare coordinator run`` and ``fedcare simulate``
end it with :data:`~fedcare.errors.ExitCode.NO_TRAINING` and one line per site saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedcare import messages as keys

__all__ = ["RunOutcome", "SiteOutcome", "run_outcome"]

EVALUATION_NOTE = "evaluation: "  # how SiteTracking marks a rejected evaluation (not an update)
STATE = "<site state>"

HINTS: Mapping[str, str] = {
    keys.REFUSED_BUDGET: "its privacy budget is spent (an earlier non-private run makes ε "
    "infinite); see 'fedcare privacy report --state {state}'",
    keys.REFUSED_DP_REQUIRED: "the site trains only with differential privacy; run with --dp "
    "(or the site starts with --allow-non-dp)",
    keys.REFUSED_SECAGG_REQUIRED: "the site sends updates only under SecAgg+; run with "
    "--secure-aggregation",
    keys.REFUSED_APP: "the site did not approve this app bundle; the site adds its hash with "
    "'fedcare site start --approve-app HASH'",
    keys.FAILED_LEDGER: "the site's privacy ledger could not be read or written; see "
    "'fedcare privacy report --state {state}' and the site's log",
    keys.FAILED_DATA: "the site's data fails the data gate; run 'fedcare site check --data FILE' "
    "at the site",
    keys.REFUSED_BUSY: "another run held the site's training lock; run again when it is free",
    keys.FAILED_SITE: "the site failed; see its log ({state}/logs)",
}
UNKNOWN_HINT = "the site replied with an error fedcare does not know; see its log ({state}/logs)"
REJECTED_HINT = "the coordinator dropped its update (see the update rules, e.g. --max-update-norm)"
SILENT_HINT = "the site never answered; is it running? see 'fedcare coordinator status'"


@dataclass(frozen=True)
class SiteOutcome:
    """What one site did in the training rounds (1..n) of one run."""

    site: str
    trained: tuple[int, ...]  # rounds whose update from this site was accepted
    refused: Mapping[int, str]  # round -> refusal category (messages.REFUSAL_CODES, "error N")
    rejected: Mapping[int, str]  # round -> why the coordinator dropped its update
    silent: tuple[int, ...]  # rounds with no reply of any kind

    def reason(self, state: str = STATE) -> str:
        """Why this site trained in no round, on one line, with what to do."""
        if self.refused and not self.rejected and not self.silent:
            categories = sorted(set(self.refused.values()))
            if len(categories) == 1:
                return f"every round refused: {categories[0]} — {_hint(categories[0], state)}"
        if self.rejected and not self.refused and not self.silent:
            first = self.rejected[min(self.rejected)]
            return f"every update rejected ({first}) — {REJECTED_HINT}"
        if self.silent and not self.refused and not self.rejected:
            return f"no reply in any round — {SILENT_HINT}"
        parts = [
            f"refused {category} in round(s) {_rounds(self.refused, category)}"
            for category in sorted(set(self.refused.values()))
        ]
        parts += [
            f"update rejected in round {r} ({why})" for r, why in sorted(self.rejected.items())
        ]
        parts += [f"no reply in round(s) {', '.join(map(str, self.silent))}"] if self.silent else []
        if self.refused:
            hint = _hint(self.refused[min(self.refused)], state)
        else:
            hint = REJECTED_HINT if self.rejected else SILENT_HINT
        return f"{'; '.join(parts)} — {hint}"


@dataclass(frozen=True)
class RunOutcome:
    """Per site, which training rounds it trained in and why not in the others."""

    rounds: int
    sites: Mapping[str, SiteOutcome]

    @property
    def nothing_trained(self) -> bool:
        """True when no site's update was accepted in any training round."""
        return self.rounds > 0 and not any(s.trained for s in self.sites.values())

    @property
    def untrained(self) -> list[SiteOutcome]:
        """The sites that trained in no round, by name."""
        return [s for _, s in sorted(self.sites.items()) if not s.trained]

    def lines(self, state_of: Callable[[str], str] = lambda _: STATE) -> list[str]:
        """One line per site that trained in no round: ``site: why — what to do``."""
        if not self.sites and self.rounds > 0:
            return [f"no site: no site replied in any round — {SILENT_HINT}"]
        return [f"{s.site}: {s.reason(state_of(s.site))}" for s in self.untrained]


def run_outcome(records: Sequence[Mapping[str, Any]]) -> RunOutcome:
    """The outcome of a run from its round records (round 0 = the initial model's evaluation)."""
    training = [r for r in records if int(r["round"]) > 0]
    names: set[str] = set()
    for record in records:
        for field in ("sites", "train_loss", "epsilon", "refused", "rejected"):
            names.update(record.get(field) or {})
    return RunOutcome(
        rounds=len(training),
        sites={name: _site_outcome(name, training) for name in sorted(names)},
    )


def _site_outcome(name: str, training: Sequence[Mapping[str, Any]]) -> SiteOutcome:
    trained, silent = [], []
    refused: dict[int, str] = {}
    rejected: dict[int, str] = {}
    for record in training:
        number = int(record["round"])
        dropped = str((record.get("rejected") or {}).get(name, ""))
        update_dropped = dropped and not dropped.startswith(EVALUATION_NOTE)
        if name in (record.get("refused") or {}):
            refused[number] = str(record["refused"][name])
        elif update_dropped:
            rejected[number] = dropped.split("; " + EVALUATION_NOTE)[0]
        elif name in (record.get("train_loss") or {}) or name in (record.get("epsilon") or {}):
            trained.append(number)
        else:
            silent.append(number)
    return SiteOutcome(name, tuple(trained), refused, rejected, tuple(silent))


def _hint(category: str, state: str) -> str:
    return HINTS.get(category, UNKNOWN_HINT).format(state=state)


def _rounds(by_round: Mapping[int, str], category: str) -> str:
    return ", ".join(str(r) for r, c in sorted(by_round.items()) if c == category)
