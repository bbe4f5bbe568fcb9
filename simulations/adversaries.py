"""Simulated faulty or malicious sites, for testing what the coordinator withstands.

An attack is a Flower mod around the real train handler of one named site: the site trains as
usual, then its reply is corrupted the way a broken or hostile hospital might send it. It
exists only in simulations (``fedcare simulate --attack SITE=KIND``); the deployed ClientApp
has no such mod.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcare import messages as keys
from fedcare.client.app import build_client_app
from fedcare.client.site import resolve_site
from fedcare.config import parse_choice
from fedcare.errors import ConfigError

SCALE_FACTOR = 100.0


class Attack(StrEnum):
    """What a simulated bad site does to every update it sends."""

    NAN = "nan"  # every value NaN
    WRONG_SHAPE = "wrong-shape"  # the first array loses its last column
    SCALE100 = "scale100"  # the update (local - global) multiplied by 100
    DROPOUT = "dropout"  # joins the round, then fails while training (a site crash)


def parse_attacks(values: list[str], site_names: list[str]) -> dict[str, Attack]:
    """``SITE=KIND`` pairs, checked against the scenario's sites."""
    attacks: dict[str, Attack] = {}
    for value in values:
        site, _, kind = value.partition("=")
        site = site.strip()
        if site not in site_names:
            raise ConfigError(
                f"--attack {value!r}: unknown site {site!r}; sites: {', '.join(site_names)}"
            )
        attacks[site] = parse_choice(Attack, "attack", kind.strip())
    return attacks


def corrupt(attack: Attack, local: ArrayRecord, global_arrays: ArrayRecord) -> ArrayRecord:
    """The arrays a site running ``attack`` sends instead of ``local``."""
    arrays: dict[str, Array] = {}
    for index, (name, array) in enumerate(local.items()):
        values = array.numpy()
        if attack is Attack.NAN:
            values = np.full_like(values, np.nan)
        elif attack is Attack.WRONG_SHAPE and index == 0:
            values = np.ascontiguousarray(values[..., :-1])
        elif attack is Attack.SCALE100:
            reference = global_arrays[name].numpy()
            values = (reference + SCALE_FACTOR * (values - reference)).astype(values.dtype)
        arrays[name] = Array(values)
    return ArrayRecord(arrays)


def attack_mod(attacks: Mapping[str, Attack]) -> Mod:
    """A train mod that makes each site named in ``attacks`` misbehave."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        attack = attacks.get(resolve_site(context).name)
        if attack is None:
            return call_next(msg, context)
        if attack is Attack.DROPOUT:
            code = keys.REFUSAL_CODES[keys.FAILED_SITE]
            return Message(Error(code=code, reason=keys.FAILED_SITE), reply_to=msg)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        global_arrays = msg.content.array_records[keys.ARRAYS]
        local = reply.content.array_records[keys.ARRAYS]
        reply.content[keys.ARRAYS] = corrupt(attack, local, global_arrays)
        return reply

    return mod


def adversarial_client_app(attacks: Mapping[str, Attack]) -> ClientApp:
    """fedcare's ClientApp with ``attacks`` played by the named simulated sites."""
    return build_client_app(train_mods=[attack_mod(attacks)])
