"""StaticDiscovery over real workers on loopback, and discovery URIs."""

from __future__ import annotations

import pickle
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio

import distaff
from distaff.runtime.discovery.dns import DnsDiscovery
from distaff.runtime.discovery.lan import LanDiscovery
from distaff.runtime.discovery.local import LocalDiscovery
from distaff.runtime.discovery.static import StaticDiscovery
from distaff.serialization.rpc import SERVICE, DescribeReply, DescribeRequest, add_worker_service
from distaff.serialization.wire import PROTOCOL_VERSION

from ...waiting import wait_until
from .following import ADDED, DROPPED, Recorder, free_port, workers


async def test_follows_a_list_with_host_names_resolved_and_one_uid_admitted_once() -> None:
    port = free_port("127.0.0.2")
    async with workers() as start:
        by_ip = await start("127.0.0.2", port)
        by_name = await start("127.0.0.1", free_port())
        name_port = by_name.metadata.address.rsplit(":", 1)[1]
        listed = [f"127.0.0.2:{port}", f"localhost:{name_port}", f"127.0.0.1:{name_port}"]
        async with Recorder(StaticDiscovery(listed, refresh=0.2)) as seen:
            await seen.wait(ADDED, by_ip.metadata.uid)
            await seen.wait(ADDED, by_name.metadata.uid)
            await by_ip.stop()
            await seen.wait(DROPPED, by_ip.metadata.uid)
        added = [e.metadata.uid for e in seen.events if e.type is ADDED]
        assert sorted(added) == sorted([by_ip.metadata.uid, by_name.metadata.uid])


def test_static_configuration_pickles_and_rejects_bad_input() -> None:
    static = StaticDiscovery(["10.0.0.5:7400", "worker-2:7400", "[fd00::5]:7400"], refresh=2)
    assert pickle.loads(pickle.dumps(static)) == static
    with pytest.raises(ValueError, match="at least one"):
        StaticDiscovery([])
    with pytest.raises(ValueError, match="not one string"):
        StaticDiscovery("10.0.0.5:7400")
    with pytest.raises(ValueError, match="bad address 'worker'"):
        StaticDiscovery(["worker"])


def test_discovery_from_uri_builds_each_scheme() -> None:
    dns = distaff.discovery_from_uri("dns://workers:7400?refresh=2&nameserver=10.0.0.53")
    assert dns == DnsDiscovery("workers", 7400, refresh=2, nameservers=["10.0.0.53"])
    srv = distaff.discovery_from_uri("dns+srv://_grpc._tcp.workers")
    assert isinstance(srv, DnsDiscovery)
    assert srv.srv
    static = distaff.discovery_from_uri("static://10.0.0.5:7400,[fd00::5]:7400")
    assert static == StaticDiscovery(["10.0.0.5:7400", "[fd00::5]:7400"])
    local = distaff.discovery_from_uri("local://team")
    assert isinstance(local, LocalDiscovery)
    lan = distaff.discovery_from_uri("lan://team")
    assert isinstance(lan, LanDiscovery)
    assert lan.namespace == "team"
    assert distaff.discovery_from_uri("lan://").namespace is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("workers:7400", "must start with one of"),
        ("http://workers:7400", "must start with one of"),
        ("dns://workers", "bad address"),
        ("dns://workers:7400?ttl=3", "unknown parameter"),
        ("static://a:1?nameserver=x", "for dns:// only"),
        ("dns+srv://", "names no SRV record"),
    ],
)
def test_bad_uris_are_refused_naming_the_problem(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        distaff.discovery_from_uri(uri)


async def test_a_worker_is_admitted_only_once_its_health_stream_says_serving() -> None:
    # A fake worker, in process: a real worker is NOT_SERVING while answering
    # Describe as not draining for a few milliseconds only (a drain beginning
    # just then), too short to test; this one holds that state on demand.
    described = 0

    async def describe(request: DescribeRequest, context: Any) -> DescribeReply:
        nonlocal described
        described += 1
        return DescribeReply(uid="fake-worker", protocol=PROTOCOL_VERSION, draining=False)

    async def unused(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    health = aio.HealthServicer()
    await health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.aio.server()
    add_worker_service(server, unused, unused, describe)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Recorder(StaticDiscovery([f"127.0.0.1:{port}"], refresh=0.2)) as seen:
            # described again on later refreshes: it was not admitted
            await wait_until(lambda: described >= 3)
            assert seen.events == []

            await health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
            await seen.wait(ADDED, "fake-worker")
            await health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            await seen.wait(DROPPED, "fake-worker")
        assert [(e.type, e.withdrawn) for e in seen.events] == [(ADDED, False), (DROPPED, True)]
    finally:
        await server.stop(0)
