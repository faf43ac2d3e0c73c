"""Compatibility at first contact: which worker metadata a proxy admits."""

from __future__ import annotations

import logging
import platform

import pytest

from distaff.proxy.admission import Admission, incompatibilities
from distaff.serialization.metadata import WorkerMetadata
from distaff.serialization.wire import PROTOCOL_VERSION

MAJOR, MINOR, _ = platform.python_version_tuple()


def worker(uid: str = "w1", **fields: object) -> WorkerMetadata:
    return WorkerMetadata(uid, "10.0.0.5:7400", **fields)  # type: ignore[arg-type]


def test_patch_level_and_unreported_versions_are_admitted() -> None:
    assert incompatibilities(worker(python=f"{MAJOR}.{MINOR}.999", protocol=PROTOCOL_VERSION)) == []
    assert incompatibilities(worker()) == []  # an older publisher reports nothing


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"python": f"{MAJOR}.{int(MINOR) + 1}.0"}, "python"),
        ({"protocol": PROTOCOL_VERSION + 1}, "protocol"),
    ],
)
def test_another_minor_or_protocol_is_refused_naming_the_field(
    fields: dict[str, object], field: str
) -> None:
    rows = incompatibilities(worker(version="9.9", **fields))
    assert rows[0][0] == field
    assert ("distaff", rows[-1][1], "9.9") == rows[-1]  # shown when it differs too


def test_refusal_warns_once_and_is_explained_until_the_worker_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admission = Admission()
    odd = worker(python="2.7.18")
    with caplog.at_level(logging.WARNING, logger="distaff.proxy"):
        assert not admission.admit(odd)
        assert not admission.admit(odd)
    assert len(caplog.records) == 1
    assert "2.7.18" in caplog.records[0].getMessage()
    assert "worker w1 at 10.0.0.5:7400" in admission.explain()
    assert admission.admit(worker("w2"))
    admission.forget(odd)
    assert admission.explain() == ""
