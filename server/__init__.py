"""The coordinator: ServerApp, strategy selection and per-site tracking."""

from fedcare.server.app import ServerSettings, app
from fedcare.server.strategies import build_strategy
from fedcare.server.tracking import RoundRecord, SiteEvaluation, SiteTracking

__all__ = [
    "RoundRecord",
    "ServerSettings",
    "SiteEvaluation",
    "SiteTracking",
    "app",
    "build_strategy",
]
