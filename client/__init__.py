"""The site daemon side: the ClientApp and site resolution."""

from fedcare.client.app import app
from fedcare.client.site import SiteIdentity, resolve_site

__all__ = ["SiteIdentity", "app", "resolve_site"]
