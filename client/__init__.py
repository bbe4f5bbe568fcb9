"""The site side: the ClientApp, site resolution and policy, audit log and site daemon.

The ClientApp object itself is ``fedcare.client.app:app`` (the Flower component reference).
Members are imported on first use (``fedcare.lazy_exports``): ``fedcare site audit`` needs no
torch.
"""

from typing import TYPE_CHECKING

from fedcare.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from fedcare.client.policy import SitePolicy
    from fedcare.client.site import SiteIdentity, resolve_site

__all__ = ["SiteIdentity", "SitePolicy", "resolve_site"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SiteIdentity": "fedcare.client.site",
        "SitePolicy": "fedcare.client.policy",
        "resolve_site": "fedcare.client.site",
    },
)
