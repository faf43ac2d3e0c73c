"""The discovery protocol, as the backends here implement it.

It lives in ``proxy/discovery.py``, below the proxy that follows it; the
backends (local, LAN, ...) import it from here.
"""

from __future__ import annotations

from ...proxy.discovery import (
    DiscoveryEvent,
    DiscoveryEventType,
    DiscoveryLike,
    DiscoveryPublisherLike,
    DiscoverySubscriberLike,
    describe_subscriber,
)

__all__ = [
    "DiscoveryEvent",
    "DiscoveryEventType",
    "DiscoveryLike",
    "DiscoveryPublisherLike",
    "DiscoverySubscriberLike",
    "describe_subscriber",
]
