"""The coordinator: ServerApp, strategy selection and per-site tracking.

The ServerApp object itself is ``fedcare.server.app:app`` (the Flower component reference).
"""

from fedcare.server.app import ServerSettings
from fedcare.server.strategies import build_strategy
from fedcare.server.tracking import RoundRecord, SiteEvaluation, SiteTracking

__all__ = ["RoundRecord", "ServerSettings", "SiteEvaluation", "SiteTracking", "build_strategy"]
