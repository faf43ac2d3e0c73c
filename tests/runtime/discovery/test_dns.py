"""DnsDiscovery against a real DNS server on loopback whose records change while subscribed.

Workers are real processes bound to distinct loopback addresses (127.0.0.2,
127.0.0.3, ::1), so one A record set can name them all on one port.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator

import pytest

import distaff
from distaff.runtime.discovery.dns import DnsDiscovery
from distaff.serialization.rpc import call_stop
from tests.dnsserver import DnsServer

from .following import ADDED, DROPPED, Recorder, free_port, workers

NAME = "workers.test."


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def discovery(dns: DnsServer, port: int | None = None, **kwargs: object) -> DnsDiscovery:
    return DnsDiscovery(NAME, port, nameservers=[dns.nameserver], refresh=0.2, **kwargs)


async def rounds(dns: DnsServer, n: int, timeout: float = 10.0) -> None:
    """Wait until the server has answered ``n`` more resolutions (two queries each)."""
    target = dns.queries + 2 * n
    async with asyncio.timeout(timeout):
        while dns.queries < target:
            await asyncio.sleep(0.02)


async def test_resolve_reads_a_aaaa_and_srv_and_reports_nxdomain_as_none(dns: DnsServer) -> None:
    dns.set(
        {
            NAME: [["A", "10.1.0.1"], ["AAAA", "fd00::1"]],
            "_grpc._tcp.workers.test.": [["SRV", "w1.test.", 7401], ["SRV", "w2.test.", 7402]],
            "w1.test.": [["A", "10.1.0.2"]],
            "w2.test.": [["AAAA", "fd00::2"]],
        }
    )
    plain, srv = (
        discovery(dns, 7400),
        DnsDiscovery("_grpc._tcp.workers.test", nameservers=[dns.nameserver]),
    )
    missing = DnsDiscovery("absent.test", 1, nameservers=[dns.nameserver])

    assert await plain.resolve(plain._resolver()) == ["10.1.0.1:7400", "[fd00::1]:7400"]
    assert srv.srv
    assert sorted(await srv.resolve(srv._resolver()) or []) == ["10.1.0.2:7401", "[fd00::2]:7402"]
    assert await missing.resolve(missing._resolver()) is None


def test_configuration_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="needs a port"):
        DnsDiscovery("workers")
    with pytest.raises(ValueError, match="refresh"):
        DnsDiscovery("workers", 1, refresh=0)
    with pytest.raises(ValueError, match="bad address"):
        DnsDiscovery("workers", 1, nameservers=["10.0.0.1:x"])
    with pytest.raises(TypeError, match="only follows"):
        DnsDiscovery("workers", 1).publisher()


def test_pickles_as_its_configuration(dns: DnsServer) -> None:
    original = discovery(dns, 7400)
    restored = pickle.loads(pickle.dumps(original))
    assert restored == original
    assert restored.nameservers == (dns.nameserver,)


async def test_follows_records_added_and_keeps_a_healthy_worker_through_misses(
    dns: DnsServer,
) -> None:
    port = free_port("127.0.0.2")
    async with workers() as start:
        w2 = await start("127.0.0.2", port)
        w3 = await start("127.0.0.3", port)
        dns.set({NAME: [["A", "127.0.0.2"]]})
        async with Recorder(discovery(dns, port)) as seen:
            await seen.wait(ADDED, w2.metadata.uid)
            added = next(e.metadata for e in seen.events if e.type is ADDED)
            assert added.address == f"127.0.0.2:{port}"
            assert added.python
            assert added.protocol
            assert added.cloudpickle

            dns.set({NAME: [["A", "127.0.0.2"], ["A", "127.0.0.3"]]})
            await seen.wait(ADDED, w3.metadata.uid)

            dns.set({NAME: [["A", "127.0.0.2"]]})  # record gone, worker healthy
            await rounds(dns, 4)
            dns.set({})  # NXDOMAIN: one bad answer must not empty the pool
            await rounds(dns, 4)
            assert seen.members == {w2.metadata.uid, w3.metadata.uid}

            await w3.stop()  # record gone and the worker too
            await seen.wait(DROPPED, w3.metadata.uid)
            assert seen.members == {w2.metadata.uid}


async def test_a_draining_worker_leaves_at_once_and_is_not_readmitted(dns: DnsServer) -> None:
    port = free_port("127.0.0.2")
    async with workers() as start:
        worker = await start("127.0.0.2", port)
        dns.set({NAME: [["A", "127.0.0.2"]]})
        async with Recorder(discovery(dns, port)) as seen:
            await seen.wait(ADDED, worker.metadata.uid)
            import grpc.aio  # after distaff, which quiets gRPC's INFO lines

            async with grpc.aio.insecure_channel(f"127.0.0.2:{port}") as channel:
                stopping = asyncio.ensure_future(call_stop(channel, 2.0, 10.0))
                await seen.wait(DROPPED, worker.metadata.uid, timeout=1.5)
                await stopping
            added = [e for e in seen.events if e.type is ADDED]
            assert len(added) == 1
            [dropped] = [e for e in seen.events if e.type is DROPPED]
            assert dropped.withdrawn  # it left SERVING: a drain, not a death


async def test_a_new_worker_behind_a_known_address_is_dropped_then_added(dns: DnsServer) -> None:
    port = free_port("127.0.0.2")
    async with workers() as start:
        first = await start("127.0.0.2", port)
        dns.set({NAME: [["A", "127.0.0.2"]]})
        async with Recorder(discovery(dns, port)) as seen:
            await seen.wait(ADDED, first.metadata.uid)
            await first.kill()
            second = await start("127.0.0.2", port)
            await seen.wait(ADDED, second.metadata.uid)
            kinds = [(e.type, e.metadata.uid) for e in seen.events]
            assert kinds == [
                (ADDED, first.metadata.uid),
                (DROPPED, first.metadata.uid),
                (ADDED, second.metadata.uid),
            ]
            assert not seen.events[1].withdrawn  # killed: its health stream broke


async def test_ipv6_and_srv_records_name_workers(dns: DnsServer) -> None:
    v6_port, v4_port = free_port("::1"), free_port("127.0.0.1")
    async with workers() as start:
        v6 = await start("::1", v6_port)
        v4 = await start("127.0.0.1", v4_port)
        dns.set(
            {
                "_grpc._tcp.workers.test.": [
                    ["SRV", "six.test.", v6_port],
                    ["SRV", "four.test.", v4_port],
                ],
                "six.test.": [["AAAA", "::1"]],
                "four.test.": [["A", "127.0.0.1"]],
            }
        )
        subscription = DnsDiscovery(
            "_grpc._tcp.workers.test.", nameservers=[dns.nameserver], refresh=0.2
        )
        async with Recorder(subscription) as seen:
            await seen.wait(ADDED, v6.metadata.uid)
            await seen.wait(ADDED, v4.metadata.uid)
        addresses = {e.metadata.address for e in seen.events}
        assert addresses == {f"[::1]:{v6_port}", f"127.0.0.1:{v4_port}"}


async def test_pool_from_a_dns_uri_runs_calls_and_nested_calls(dns: DnsServer) -> None:
    from tests.integration import routines as r

    port = free_port("127.0.0.2")
    async with workers() as start:
        pids = {(await start(host, port)).pid for host in ("127.0.0.2", "127.0.0.3")}
        dns.set({NAME: [["A", "127.0.0.2"], ["A", "127.0.0.3"]]})
        uri = f"dns://{NAME}:{port}?nameserver={dns.nameserver}&refresh=0.2"
        async with distaff.WorkerPool(discovery=uri) as pool:
            await pool.proxy.wait_for(lambda ws: len(ws) == 2, timeout=10)
            seen = {await r.pid() for _ in range(6)}
            _, (_, caller, inner_pid), outer_pid = await r.nested_info()
        assert seen == pids
        assert caller is not None
        assert {inner_pid, outer_pid} <= pids


async def test_an_incompatible_worker_is_refused_with_a_table(
    dns: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # No second Python with distaff installed here: the worker's test-only
    # `pretend_python` option changes what its Describe answers.
    from tests.integration import routines as r

    port = free_port("127.0.0.2")
    async with workers() as start:
        await start("127.0.0.2", port, pretend_python="3.99.1")
        dns.set({NAME: [["A", "127.0.0.2"]]})
        pool = distaff.WorkerPool(discovery=discovery(dns, port), wait=1.5)
        async with pool:
            with pytest.raises(distaff.NoWorkersAvailable) as caught:
                await r.pid()
    message = str(caught.value)
    assert "incompatible workers were not admitted" in message
    assert "python" in message
    assert "3.99.1" in message
    warnings = [rec for rec in caplog.records if "incompatible worker" in rec.getMessage()]
    assert len(warnings) == 1
