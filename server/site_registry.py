"""Who a reply is from: the coordinator's registry, keyed by authenticated node id.

Flower's SuperLink authenticates each SuperNode by its registered key and stamps every reply
with that node's id; ``coordinator start`` records, per site, the node id its key got
(``sites.json``). A reply's site is therefore ``names[src_node_id]``, never the name the reply
itself claims. The ServerApp gets the registry's path through the run config
(``site-registry``); a simulation has none (see :mod:`fedcare.server.tracking`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedcare.errors import ConfigError


@dataclass(frozen=True)
class SiteRegistry:
    """Registered sites: authenticated node id -> name, and each site's public key."""

    names: Mapping[int, str]
    public_keys: Mapping[str, Path]

    @classmethod
    def load(cls, path: Path) -> SiteRegistry:
        """Read ``sites.json`` (written by ``pki add-site`` and ``coordinator start``)."""
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            names = {int(e["node_id"]): n for n, e in entries.items() if e.get("node_id")}
            keys = {name: Path(str(entry["public_key"])) for name, entry in entries.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{path}: site registry unreadable ({type(exc).__name__}); it is written by "
                "'fedcare pki add-site' and 'fedcare coordinator start'"
            ) from None
        return cls(names=names, public_keys=keys)
