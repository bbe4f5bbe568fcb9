"""fedcare: federated learning across hospitals on Flower, PyTorch and Opacus."""

from fedcare.config import RunConfig, StrategyName, Weighting
from fedcare.errors import ConfigError, DataError, FedcareError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "FedcareError",
    "RunConfig",
    "StrategyName",
    "Weighting",
    "__version__",
]
