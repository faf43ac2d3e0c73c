"""Subscribers name what they follow, for error messages."""

from __future__ import annotations

import pathlib

import distaff
from distaff.runtime.discovery.base import describe_subscriber


def test_a_local_subscriber_describes_its_namespace() -> None:
    subscriber = distaff.LocalDiscovery("newcomr").subscriber()

    assert describe_subscriber(subscriber) == "LocalDiscovery('newcomr')"


def test_a_local_subscriber_with_its_own_root_names_the_root(tmp_path: pathlib.Path) -> None:
    subscriber = distaff.LocalDiscovery("jobs", root=str(tmp_path)).subscriber()

    assert describe_subscriber(subscriber) == f"LocalDiscovery('jobs', root={str(tmp_path)!r})"


def test_a_lan_subscriber_describes_its_namespace() -> None:
    assert describe_subscriber(distaff.LanDiscovery("gpu").subscriber()) == "LanDiscovery('gpu')"
    assert describe_subscriber(distaff.LanDiscovery().subscriber()) == "LanDiscovery(None)"


def test_another_subscriber_is_described_by_its_repr() -> None:
    class Mine:
        def __repr__(self) -> str:
            return "Mine(3 hosts)"

    assert describe_subscriber(Mine()) == "Mine(3 hosts)"
