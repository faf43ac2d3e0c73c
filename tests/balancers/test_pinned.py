"""PinnedLoadBalancer: offers one worker (an actor's), and never another."""

from __future__ import annotations

import pickle
from typing import Any

import distaff
from distaff.balancers.pinned import PinnedLoadBalancer


def meta(uid: str) -> distaff.WorkerMetadata:
    return distaff.WorkerMetadata(uid=uid, address="127.0.0.1:1")


def pool(*uids: str) -> distaff.LoadBalancerContext:
    """A context with these workers. The balancer never touches a connection."""
    context = distaff.LoadBalancerContext()
    for uid in uids:
        context.add_worker(meta(uid), object())  # type: ignore[arg-type]
    return context


async def offered(balancer: Any, context: Any, *, fail: bool = False) -> list[str]:
    """Drive one call as the proxy would; every candidate fails if ``fail``."""
    candidates = balancer.delegate(context=context)
    uids: list[str] = []
    try:
        metadata, _ = await anext(candidates)
        while True:
            uids.append(metadata.uid)
            if fail:
                error = distaff.TransientRpcError("UNAVAILABLE", "down", "127.0.0.1:1")
                metadata, _ = await candidates.athrow(error)
            else:
                await candidates.asend(metadata)
    except StopAsyncIteration:
        return uids


async def test_offers_its_worker_once_and_nobody_after_a_failure() -> None:
    context = pool("a", "b", "c")
    pinned = PinnedLoadBalancer("b")

    assert await offered(pinned, context) == ["b"]
    assert await offered(pinned, context, fail=True) == ["b"]  # returns: the call goes nowhere


async def test_follows_the_context_when_its_worker_leaves_and_comes_back() -> None:
    context = pool("a", "b")
    pinned = PinnedLoadBalancer("b")
    assert await offered(pinned, context) == ["b"]

    context.remove_worker(meta("b"))
    assert await offered(pinned, context) == []

    context.add_worker(meta("b"), object())  # type: ignore[arg-type]
    assert await offered(pinned, context) == ["b"]


async def test_pickles_as_its_uid() -> None:
    restored = pickle.loads(pickle.dumps(PinnedLoadBalancer("a")))

    assert restored.uid == "a"
    assert await offered(restored, pool("a")) == ["a"]
