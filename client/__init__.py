"""The site side: the ClientApp, site resolution and policy, audit log and site daemon.

The ClientApp object itself is ``fedcare.client.app:app`` (the Flower component reference).
"""

from fedcare.client.policy import SitePolicy
from fedcare.client.site import SiteIdentity, resolve_site

__all__ = ["SiteIdentity", "SitePolicy", "resolve_site"]
