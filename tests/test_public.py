"""The public surface: everything users touch is re-exported from ``distaff``."""

from __future__ import annotations
import __future__

import inspect
import types

import pytest

import distaff

EXPORTED = sorted(name for name in distaff.__all__ if not name.startswith("_"))
CLASSES_AND_FUNCTIONS = [
    name
    for name in EXPORTED
    if inspect.isclass(getattr(distaff, name)) or inspect.isfunction(getattr(distaff, name))
]

BALANCER_API = [
    "DelegatingLoadBalancerLike",
    "DispatchingLoadBalancerLike",
    "LoadBalancerContext",
    "LoadBalancerContextView",
    "LoadBalancerLike",
    "NoWorkersAvailable",
    "RoundRobinLoadBalancer",
    "RpcError",
    "TransientRpcError",
    "WorkerConnection",
    "WorkerMetadata",
    "WorkerProxy",
]


def test_all_lists_exactly_the_public_attributes() -> None:
    # Arrange: subpackages (distaff.runtime, ...) are layout, not exports; a
    # ``from __future__ import`` leaves a compiler flag bound, not an export
    public = {
        name
        for name, value in vars(distaff).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }

    # Act / Assert
    assert set(EXPORTED) == public
    assert len(distaff.__all__) == len(set(distaff.__all__))


def test_version_is_exported() -> None:
    assert "__version__" in distaff.__all__
    assert isinstance(distaff.__version__, str)


@pytest.mark.parametrize("name", BALANCER_API)
def test_balancer_api_is_exported(name: str) -> None:
    assert name in distaff.__all__


@pytest.mark.parametrize("name", CLASSES_AND_FUNCTIONS)
def test_exported_name_reports_the_public_module(name: str) -> None:
    assert getattr(distaff, name).__module__ == "distaff"


@pytest.mark.parametrize("name", CLASSES_AND_FUNCTIONS)
def test_exported_name_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(distaff, name))
    assert doc is not None
    assert doc.strip()
