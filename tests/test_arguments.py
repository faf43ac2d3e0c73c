"""Bad arguments to public constructors fail at once, naming the argument."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import distaff

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


async def body() -> None:
    pass


# (what is built, the exception, a pattern its message must match)
BAD: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("spawn str", lambda: distaff.WorkerPool(spawn="2"), TypeError, r"spawn.*int.*'2'"),  # type: ignore[arg-type]
    ("spawn float", lambda: distaff.WorkerPool(spawn=2.0), TypeError, r"spawn.*int"),  # type: ignore[arg-type]
    ("spawn bool", lambda: distaff.WorkerPool(spawn=True), TypeError, r"spawn.*int"),
    ("spawn < 0", lambda: distaff.WorkerPool(spawn=-1), ValueError, r"spawn must be >= 0"),
    ("no workers", lambda: distaff.WorkerPool(spawn=0), ValueError, r"spawn=N, discovery="),
    ("lease < 1", lambda: distaff.WorkerPool(spawn=2, lease=-1), ValueError, r"lease must be >= 1"),
    ("lease 0", lambda: distaff.WorkerPool(spawn=2, lease=0), ValueError, r"lease must be >= 1"),
    ("subset 0", lambda: distaff.WorkerPool(spawn=2, subset=0), ValueError, r"subset must be >= 1"),
    (
        "subset",
        lambda: distaff.WorkerPool(spawn=2, subset="8"),
        TypeError,
        r"subset must be an int",
    ),  # type: ignore[arg-type]
    ("lease str", lambda: distaff.WorkerPool(spawn=2, lease="3"), TypeError, r"lease"),  # type: ignore[arg-type]
    ("grace < 0", lambda: distaff.WorkerPool(spawn=1, grace=-3), ValueError, r"grace must be >= 0"),
    ("grace nan", lambda: distaff.WorkerPool(spawn=1, grace=float("nan")), ValueError, r"grace"),
    ("grace str", lambda: distaff.WorkerPool(spawn=1, grace="5"), TypeError, r"grace.*number"),  # type: ignore[arg-type]
    ("wait < 0", lambda: distaff.WorkerPool(spawn=1, wait=-1), ValueError, r"wait must be >= 0"),
    ("restart", lambda: distaff.WorkerPool(spawn=1, restart="no"), TypeError, r"restart"),  # type: ignore[arg-type]
    ("lazy", lambda: distaff.WorkerPool(spawn=1, lazy=None), TypeError, r"lazy"),  # type: ignore[arg-type]
    ("empty tag", lambda: distaff.WorkerPool("", spawn=1), ValueError, r"tag.*non-empty"),
    ("tag int", lambda: distaff.WorkerPool(3, spawn=1), TypeError, r"tag.*str"),  # type: ignore[arg-type]
    (
        "discovery str",
        lambda: distaff.WorkerPool(discovery="jobs"),
        ValueError,
        r"discovery URI 'jobs' must start with one of dns://",
    ),
    (
        "discovery int",
        lambda: distaff.WorkerPool(discovery=3),  # type: ignore[arg-type]
        TypeError,
        r"discovery must be a discovery backend",
    ),
    (
        "credentials",
        lambda: distaff.WorkerPool(spawn=1, credentials=("a", "b")),  # type: ignore[arg-type]
        TypeError,
        r"credentials must be distaff.WorkerCredentials",
    ),
    ("context timeout 0", lambda: distaff.RuntimeContext(timeout=0), ValueError, r"timeout.*> 0"),
    (
        "context dispatch < 0",
        lambda: distaff.RuntimeContext(dispatch_timeout=-1),
        ValueError,
        r"dispatch_timeout must be > 0",
    ),
    ("context str", lambda: distaff.RuntimeContext(timeout="5"), TypeError, r"timeout.*number"),  # type: ignore[arg-type]
    ("window < 0", lambda: distaff.routine(window=-1)(body), ValueError, r"window must be >= 0"),
    ("window float", lambda: distaff.routine(window=2.5)(body), TypeError, r"window.*int"),  # type: ignore[arg-type]
    ("routine timeout", lambda: distaff.routine(timeout=-1)(body), ValueError, r"timeout"),
    (
        "routine dispatch str",
        lambda: distaff.routine(dispatch_timeout="1")(body),  # type: ignore[arg-type]
        TypeError,
        r"dispatch_timeout",
    ),
    (
        "credentials str",
        lambda: distaff.WorkerCredentials("ca.pem", PEM, PEM),  # type: ignore[arg-type]
        TypeError,
        r"ca must be PEM bytes.*from_files",
    ),
    (
        "credentials not PEM",
        lambda: distaff.WorkerCredentials(PEM, b"garbage", PEM),
        ValueError,
        r"cert is not PEM",
    ),
    (
        "credentials mutual",
        lambda: distaff.WorkerCredentials(PEM, PEM, PEM, mutual="yes"),  # type: ignore[arg-type]
        TypeError,
        r"mutual",
    ),
    (
        "credentials missing file",
        lambda: distaff.WorkerCredentials.from_files("/nonexistent/ca.pem", "c", "k"),
        FileNotFoundError,
        r"/nonexistent/ca\.pem",
    ),
    ("namespace empty", lambda: distaff.LocalDiscovery(""), ValueError, r"namespace ''"),
    ("namespace slash", lambda: distaff.LocalDiscovery("a/b"), ValueError, r"namespace 'a/b'"),
    ("namespace int", lambda: distaff.LocalDiscovery(7), TypeError, r"namespace.*str"),  # type: ignore[arg-type]
    (
        "poll interval",
        lambda: distaff.LocalDiscovery("jobs", poll_interval=0),
        ValueError,
        r"poll_interval must be > 0",
    ),
    (
        "root",
        lambda: distaff.LocalDiscovery("jobs", root=3),  # type: ignore[arg-type]
        TypeError,
        r"root must be a path",
    ),
    ("lan namespace", lambda: distaff.LanDiscovery(""), ValueError, r"namespace ''"),
    ("lan ttl", lambda: distaff.LanDiscovery(record_ttl=0), ValueError, r"record_ttl must be >= 1"),
    (
        "lan interfaces",
        lambda: distaff.LanDiscovery(interfaces=["eth0"]),
        ValueError,
        r"interfaces: 'eth0'",
    ),
    (
        "lan interfaces str",
        lambda: distaff.LanDiscovery(interfaces="127.0.0.1"),  # type: ignore[arg-type]
        TypeError,
        r"interfaces must be a list",
    ),
]


@pytest.mark.parametrize(
    ("build", "error", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_a_bad_argument_is_refused_naming_it(
    build: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        build()

    assert type(caught.value) is error
    assert re.search(message, str(caught.value)), str(caught.value)


def test_good_arguments_are_accepted() -> None:
    pool = distaff.WorkerPool("gpu", spawn=2, lease=1, grace=0, wait=0, restart=False)

    assert (pool.spawn, pool.grace, pool.restart, pool.tags) == (2, 0.0, False, {"gpu"})
    assert distaff.RuntimeContext(timeout=1, dispatch_timeout=0.5).timeout == 1
    assert distaff.LocalDiscovery("jobs", poll_interval=1).poll_interval == 1
