"""The site side: the ClientApp and site resolution.

The ClientApp object itself is ``fedcare.client.app:app`` (the Flower component reference).
"""

from fedcare.client.site import SiteIdentity, resolve_site

__all__ = ["SiteIdentity", "resolve_site"]
