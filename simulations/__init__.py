"""Multi-site simulations of the real ServerApp/ClientApp, with baselines and reports.

Members are imported on first use (``fedcare.lazy_exports``).
"""

from typing import TYPE_CHECKING

from fedcare.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from fedcare.simulations.adversaries import Attack
    from fedcare.simulations.scenarios import Scenario, SiteSource, get_scenario
    from fedcare.simulations.simulation import simulate

__all__ = ["Attack", "Scenario", "SiteSource", "get_scenario", "simulate"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Attack": "fedcare.simulations.adversaries",
        "Scenario": "fedcare.simulations.scenarios",
        "SiteSource": "fedcare.simulations.scenarios",
        "get_scenario": "fedcare.simulations.scenarios",
        "simulate": "fedcare.simulations.simulation",
    },
)
