"""The coordinator: ServerApp, strategy selection, update validation, per-site tracking and
the SecAgg+ grid.

The ServerApp object itself is ``fedcare.server.app:app`` (the Flower component reference).
Members are imported on first use (``fedcare.lazy_exports``): ``fedcare coordinator status``
needs no torch.
"""

from typing import TYPE_CHECKING

from fedcare.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from fedcare.server.app import ServerSettings
    from fedcare.server.secure_aggregation import SecureAggregationGrid
    from fedcare.server.strategies import build_strategy
    from fedcare.server.tracking import RoundRecord, SiteEvaluation, SiteTracking
    from fedcare.server.validation import UpdateRules

__all__ = [
    "RoundRecord",
    "SecureAggregationGrid",
    "ServerSettings",
    "SiteEvaluation",
    "SiteTracking",
    "UpdateRules",
    "build_strategy",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RoundRecord": "fedcare.server.tracking",
        "SecureAggregationGrid": "fedcare.server.secure_aggregation",
        "ServerSettings": "fedcare.server.app",
        "SiteEvaluation": "fedcare.server.tracking",
        "SiteTracking": "fedcare.server.tracking",
        "UpdateRules": "fedcare.server.validation",
        "build_strategy": "fedcare.server.strategies",
    },
)
