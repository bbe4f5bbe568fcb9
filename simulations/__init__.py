"""Multi-site simulations of the real ServerApp/ClientApp, with baselines and reports."""

from fedcare.simulations.adversaries import Attack
from fedcare.simulations.scenarios import Scenario, SiteSource, get_scenario
from fedcare.simulations.simulate import simulate

__all__ = ["Attack", "Scenario", "SiteSource", "get_scenario", "simulate"]
