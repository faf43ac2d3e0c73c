"""distaff: run async functions and async generators on pools of worker processes.

Layout (dependencies point down):

    runtime/        what users touch: routine, WorkerPool, contexts,
                    map/as_completed, actors;
                    the worker process and service; discovery backends
    proxy/          WorkerProxy (membership + dispatch loop), the per-worker
                    WorkerConnection (gRPC or a same-host Unix socket),
                    LoadBalancerContext
    balancers/      the balancer protocols and the built-in balancers
                    (round robin, least loaded, latency aware)
    serialization/  the wire (.proto + generated code), the session frames,
                    Task and its pickling, exception shipping, worker
                    metadata codec

Importing distaff sets ``GRPC_VERBOSITY=ERROR`` in the environment unless it
is already set (gRPC's INFO lines about workers coming and going are noise).
"""

from __future__ import annotations

import contextlib as _contextlib
import os as _os
import typing as _typing

# Pools see workers come and go routinely; gRPC's INFO lines about it are
# noise. An explicit GRPC_VERBOSITY still wins.
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from ._exceptions import (
    ActorDiedError as ActorDiedError,
)
from ._exceptions import (
    DistaffError as DistaffError,
)
from ._exceptions import (
    InsecureBindError as InsecureBindError,
)
from ._exceptions import (
    NoWorkersAvailable as NoWorkersAvailable,
)
from ._exceptions import (
    RemoteException as RemoteException,
)
from ._exceptions import (
    RpcError as RpcError,
)
from ._exceptions import (
    SerializationError as SerializationError,
)
from ._exceptions import (
    TransientRpcError as TransientRpcError,
)
from ._exceptions import (
    WorkerLostError as WorkerLostError,
)
from ._exceptions import (
    WorkerStartError as WorkerStartError,
)
from ._version import __version__ as __version__
from .balancers.base import (
    DelegatingLoadBalancerLike as DelegatingLoadBalancerLike,
)
from .balancers.base import (
    DispatchingLoadBalancerLike as DispatchingLoadBalancerLike,
)
from .balancers.base import (
    LoadBalancerContextLike as LoadBalancerContextLike,
)
from .balancers.base import (
    LoadBalancerContextView as LoadBalancerContextView,
)
from .balancers.base import (
    LoadBalancerLike as LoadBalancerLike,
)
from .balancers.latency import LatencyAwareLoadBalancer as LatencyAwareLoadBalancer
from .balancers.leastloaded import LeastLoadedLoadBalancer as LeastLoadedLoadBalancer
from .balancers.roundrobin import RoundRobinLoadBalancer as RoundRobinLoadBalancer
from .proxy.connection import WorkerConnection as WorkerConnection
from .proxy.context import LoadBalancerContext as LoadBalancerContext
from .proxy.credentials import WorkerCredentials as WorkerCredentials
from .proxy.discovery import (
    DiscoveryEvent as DiscoveryEvent,
)
from .proxy.discovery import (
    DiscoveryEventType as DiscoveryEventType,
)
from .proxy.discovery import (
    DiscoveryLike as DiscoveryLike,
)
from .proxy.proxy import WorkerProxy as WorkerProxy
from .runtime.actors import ActorHandle as ActorHandle
from .runtime.actors import actor as actor
from .runtime.actors import get_actor as get_actor
from .runtime.context import RuntimeContext as RuntimeContext
from .runtime.context import current_task as current_task
from .runtime.contextvar import ContextVar as ContextVar
from .runtime.discovery.local import LocalDiscovery as LocalDiscovery
from .runtime.discovery.uri import discovery_from_uri as discovery_from_uri
from .runtime.fanout import as_completed as as_completed
from .runtime.fanout import map as map
from .runtime.pool import WorkerPool as WorkerPool
from .runtime.routine import routine as routine
from .serialization.metadata import WorkerMetadata as WorkerMetadata
from .serialization.task import Task as Task

__all__ = [
    "ActorDiedError",
    "ActorHandle",
    "ContextVar",
    "DelegatingLoadBalancerLike",
    "DiscoveryEvent",
    "DiscoveryEventType",
    "DiscoveryLike",
    "DispatchingLoadBalancerLike",
    "DistaffError",
    "DnsDiscovery",
    "InsecureBindError",
    "LanDiscovery",
    "LatencyAwareLoadBalancer",
    "LeastLoadedLoadBalancer",
    "LoadBalancerContext",
    "LoadBalancerContextLike",
    "LoadBalancerContextView",
    "LoadBalancerLike",
    "LocalDiscovery",
    "NoWorkersAvailable",
    "RemoteException",
    "RoundRobinLoadBalancer",
    "RpcError",
    "RuntimeContext",
    "SerializationError",
    "StaticDiscovery",
    "Task",
    "TransientRpcError",
    "WorkerConnection",
    "WorkerCredentials",
    "WorkerLostError",
    "WorkerMetadata",
    "WorkerPool",
    "WorkerProxy",
    "WorkerStartError",
    "__version__",
    "actor",
    "as_completed",
    "current_task",
    "discovery_from_uri",
    "get_actor",
    "map",
    "routine",
]

# LanDiscovery brings zeroconf (about 25 ms of import and 5 MiB in every
# caller and worker), DnsDiscovery dnspython, so they load on first use.
_LAZY = {
    "LanDiscovery": ".runtime.discovery.lan",
    "DnsDiscovery": ".runtime.discovery.dns",
    "StaticDiscovery": ".runtime.discovery.static",
}


def _publish(obj: object) -> None:
    if isinstance(obj, type) or callable(obj):
        with _contextlib.suppress(AttributeError, TypeError):
            obj.__module__ = "distaff"


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        _publish(value)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distaff' has no attribute {name!r}")


if _typing.TYPE_CHECKING:
    from .runtime.discovery.dns import DnsDiscovery as DnsDiscovery
    from .runtime.discovery.lan import LanDiscovery as LanDiscovery
    from .runtime.discovery.static import StaticDiscovery as StaticDiscovery

for _name in __all__:
    if _name not in _LAZY:
        _publish(globals()[_name])
del _name, annotations
