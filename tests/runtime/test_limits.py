"""A pool's processes get room for the descriptors a large pool needs."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from distaff.runtime._limits import raise_open_files_limit


@pytest.fixture
def restore_limit() -> Iterator[None]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limits[1] != resource.RLIM_INFINITY and limits[1] <= 256:
        pytest.skip("the hard limit leaves no room to raise the soft one")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(restore_limit: None) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    raised = raise_open_files_limit()

    assert raised is not None
    assert raised > 256
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised


def test_it_can_be_turned_off(restore_limit: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    monkeypatch.setenv("DISTAFF_RAISE_NOFILE", "0")

    assert raise_open_files_limit() is None
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 256
