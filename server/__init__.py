"""The coordinator: ServerApp, strategy selection, update validation, per-site tracking and
the SecAgg+ grid.

The ServerApp object itself is ``fedcare.server.app:app`` (the Flower component reference).
"""

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
