"""LanDiscovery over real multicast DNS, confined to the loopback interface.

Every zeroconf instance here is bound to ``127.0.0.1`` only, so no packet
leaves the machine. Each test uses its own namespace and uids, so parallel runs
on one host do not see each other's workers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import pickle
import socket
import uuid
from collections.abc import AsyncIterator, Iterable

import ifaddr
import msgpack
import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from distaff.runtime.discovery import lan as lan_module
from distaff.runtime.discovery.base import (
    DiscoveryEvent,
    DiscoveryEventType,
    DiscoveryLike,
    DiscoveryPublisherLike,
    DiscoverySubscriberLike,
)
from distaff.runtime.discovery.lan import (
    SERVICE_TYPE,
    LanDiscovery,
    LanSubscriber,
    advertised_addresses,
    decode_txt,
    encode_txt,
    split_address,
)
from distaff.serialization.metadata import WorkerMetadata, encode_metadata

ADDED = DiscoveryEventType.WORKER_ADDED
UPDATED = DiscoveryEventType.WORKER_UPDATED
DROPPED = DiscoveryEventType.WORKER_DROPPED
LOOPBACK = ["127.0.0.1"]


def loopback_multicast_works() -> bool:
    """Send one multicast datagram out of ``lo`` (never another interface)."""
    group = "224.0.0.251"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("", 0))
            membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            rx.settimeout(2)
            tx.bind(("127.0.0.1", 0))
            loopback = socket.inet_aton("127.0.0.1")
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, loopback)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"distaff-probe", (group, rx.getsockname()[1]))
            return rx.recv(64) == b"distaff-probe"
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not loopback_multicast_works(),
    reason="IPv4 multicast on the loopback interface does not work on this host",
)


class Collector:
    """Iterates one subscription in a task; tests wait for what it saw."""

    def __init__(self, subscriber: DiscoverySubscriberLike) -> None:
        self.events: list[DiscoveryEvent] = []
        self._cursor = 0
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(subscriber))

    async def _run(self, subscriber: DiscoverySubscriberLike) -> None:
        it = aiter(subscriber)
        try:
            async for event in it:
                self.events.append(event)
                self._wake.set()
        finally:
            self._wake.set()
            await it.aclose()  # type: ignore[attr-defined]

    async def next(self, uids: Iterable[str], timeout: float = 15) -> DiscoveryEvent:
        """Return the next event (in order) about one of ``uids``."""
        wanted = set(uids)
        async with asyncio.timeout(timeout):
            while True:
                while self._cursor < len(self.events):
                    event = self.events[self._cursor]
                    self._cursor += 1
                    if event.metadata.uid in wanted:
                        return event
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the subscription ended")
                self._wake.clear()
                await self._wake.wait()

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])
        if not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]


class LogWatcher(logging.Handler):
    """Collects the lan module's log messages; tests wait for some to appear."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._wake = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._wake.set()

    async def wait_for(self, needles: Iterable[str], timeout: float = 15) -> None:
        needles = list(needles)
        async with asyncio.timeout(timeout):
            while not all(any(n in m for m in self.messages) for n in needles):
                self._wake.clear()
                await self._wake.wait()


@pytest.fixture
async def watcher() -> AsyncIterator[LogWatcher]:
    logger = logging.getLogger(lan_module.__name__)
    handler, level = LogWatcher(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def disco(token: str) -> LanDiscovery:
    return LanDiscovery(f"ns-{token}", interfaces=LOOPBACK)


def meta(uid: str, address: str = "127.0.0.1:4000", **kw: object) -> WorkerMetadata:
    return WorkerMetadata(uid=uid, address=address, **kw)  # type: ignore[arg-type]


def udp_sockets() -> int:
    """The UDP sockets this process holds (zeroconf's), whatever other fds come and go.

    Counting every descriptor was flaky in a full run: pipes and gRPC sockets
    an earlier test left to the garbage collector closed mid-test.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            inodes.update(row.split()[9] for row in list(rows)[1:])
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile, or the listing's own descriptor
            continue
        held += link.startswith("socket:[") and link[8:-1] in inodes
    return held


def test_satisfies_protocols(disco: LanDiscovery) -> None:
    assert isinstance(disco, DiscoveryLike)
    assert isinstance(disco.publisher(), DiscoveryPublisherLike)
    assert isinstance(disco.subscriber(), DiscoverySubscriberLike)


async def test_publish_see_update_drop(disco: LanDiscovery, token: str) -> None:
    uid = f"w-{token}"
    async with disco.publisher() as pub:
        await pub.publish(DiscoveryEvent(ADDED, meta(uid)))
        seen = Collector(disco.subscriber())  # started after: sees existing worker
        try:
            assert await seen.next([uid]) == DiscoveryEvent(ADDED, meta(uid))
            changed = meta(uid, tags=frozenset({"gpu"}))
            await pub.publish(DiscoveryEvent(UPDATED, changed))
            assert await seen.next([uid]) == DiscoveryEvent(UPDATED, changed)
            await pub.publish(DiscoveryEvent(DROPPED, changed))
            assert await seen.next([uid]) == DiscoveryEvent(DROPPED, changed)
        finally:
            await seen.aclose()


async def test_publisher_aclose_drops_its_workers(disco: LanDiscovery, token: str) -> None:
    uids = [f"a-{token}", f"b-{token}"]
    seen = Collector(disco.subscriber())  # started before: sees them arrive
    try:
        pub = disco.publisher()
        try:
            await asyncio.gather(*(pub.publish(DiscoveryEvent(ADDED, meta(u))) for u in uids))
            added = {await seen.next(uids), await seen.next(uids)}
            assert added == {DiscoveryEvent(ADDED, meta(u)) for u in uids}
        finally:
            await pub.aclose()
        dropped = {await seen.next(uids), await seen.next(uids)}
        assert dropped == {DiscoveryEvent(DROPPED, meta(u)) for u in uids}
        with pytest.raises(RuntimeError, match="closed"):
            await pub.publish(DiscoveryEvent(ADDED, meta(uids[0])))
    finally:
        await seen.aclose()


async def test_metadata_round_trip_and_dialable_addresses(disco: LanDiscovery, token: str) -> None:
    full = meta(
        f"full-{token}",
        pid=4242,
        host="node-7",
        version="0.1.0",
        tags=frozenset({"gpu", "big", "ü"}),
        secure=True,
        options={f"key{i}": "v" * 40 for i in range(20)},  # several TXT chunks
    )
    v6 = meta(f"v6-{token}", address="[::1]:4001")
    wild = meta(f"wild-{token}", address="0.0.0.0:4002")
    odd = meta(f"odd uid/{token}", address="localhost:4003")
    workers = [full, v6, wild, odd]
    async with disco.publisher() as pub:
        await asyncio.gather(*(pub.publish(DiscoveryEvent(ADDED, m)) for m in workers))
        seen = Collector(pickle.loads(pickle.dumps(disco.subscriber())))
        try:
            uids = [m.uid for m in workers]
            got: dict[str, WorkerMetadata] = {}
            while len(got) < len(workers):
                event = await seen.next(uids)
                got[event.metadata.uid] = event.metadata
        finally:
            await seen.aclose()
    assert got[full.uid] == full
    assert got[v6.uid] == v6
    # A wildcard bind, seen through loopback-only interfaces, dials loopback.
    assert got[wild.uid].address == "127.0.0.1:4002"
    assert got[odd.uid].address in ("127.0.0.1:4003", "[::1]:4003")
    assert got[odd.uid].uid == odd.uid


async def test_namespace_filtering(token: str, watcher: LogWatcher, disco: LanDiscovery) -> None:
    other = LanDiscovery(f"other-{token}", interfaces=LOOPBACK)
    everything = LanDiscovery(interfaces=LOOPBACK)
    mine, theirs = f"mine-{token}", f"theirs-{token}"
    async with disco.publisher() as pub, other.publisher() as other_pub:
        await asyncio.gather(
            pub.publish(DiscoveryEvent(ADDED, meta(mine))),
            other_pub.publish(DiscoveryEvent(ADDED, meta(theirs))),
        )
        filtered = Collector(disco.subscriber())
        unfiltered = Collector(everything.subscriber())
        try:
            assert (await filtered.next([mine, theirs])).metadata.uid == mine
            await watcher.wait_for([f"{theirs}.{SERVICE_TYPE}: namespace"])
            seen = {(await unfiltered.next([mine, theirs])).metadata.uid for _ in "ab"}
            assert seen == {mine, theirs}
        finally:
            await filtered.aclose()
            await unfiltered.aclose()
    assert all(e.metadata.uid != theirs for e in filtered.events)


async def test_foreign_and_malformed_records_are_skipped(token: str, watcher: LogWatcher) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    good_chunk = b64(encode_metadata(meta("junk")))
    junk: dict[str, dict[str, str]] = {
        "empty": {},
        "foreign": {"path": "/printer", "txtvers": "7"},
        "nocount": {"txtvers": "1", "m0": good_chunk},
        "missing": {"txtvers": "1", "mc": "2", "m0": good_chunk},
        "notb64": {"txtvers": "1", "mc": "1", "m0": "!!not base64!!"},
        "notmsgpack": {"txtvers": "1", "mc": "1", "m0": b64(b"\xc1\xc1")},
        "schema": {"txtvers": "1", "mc": "1", "m0": b64(msgpack.packb({"v": 9}))},
    }
    names = {kind: f"junk-{kind}-{token}" for kind in junk}
    good = f"good-{token}"
    raw = AsyncZeroconf(interfaces=LOOPBACK)
    try:
        infos = [
            AsyncServiceInfo(
                SERVICE_TYPE,
                f"{names[kind]}.{SERVICE_TYPE}",
                port=9,
                properties=props,
                server=f"{names[kind]}.local.",
                parsed_addresses=LOOPBACK,
            )
            for kind, props in junk.items()
        ]
        for info in infos:
            await raw.async_register_service(info, cooperating_responders=True)
        disco = LanDiscovery(interfaces=LOOPBACK)  # no namespace: decode everything
        async with disco.publisher() as pub:
            await pub.publish(DiscoveryEvent(ADDED, meta(good)))
            seen = Collector(disco.subscriber())
            try:
                assert await seen.next([good]) == DiscoveryEvent(ADDED, meta(good))
                await watcher.wait_for(
                    f"skipping discovery record {name}." for name in names.values()
                )
            finally:
                await seen.aclose()
    finally:
        await raw.async_close()
    assert all(not e.metadata.uid.startswith("junk") for e in seen.events)


async def test_closing_releases_sockets(disco: LanDiscovery, token: str) -> None:
    before = udp_sockets()
    uid = f"fd-{token}"
    pub = disco.publisher()
    try:
        await pub.publish(DiscoveryEvent(ADDED, meta(uid)))
        with_publisher = udp_sockets()
        seen = Collector(disco.subscriber())
        try:
            await seen.next([uid])
            assert udp_sockets() > with_publisher
        finally:
            await seen.aclose()  # cancels the iterating task
        assert udp_sockets() == with_publisher
    finally:
        await pub.aclose()
    assert udp_sockets() == before


async def test_cancelled_aclose_still_releases_sockets(disco: LanDiscovery, token: str) -> None:
    before = udp_sockets()
    pub = disco.publisher()
    await pub.publish(DiscoveryEvent(ADDED, meta(f"cx-{token}")))
    assert udp_sockets() > before
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # the goodbyes alone take 250 ms
            await pub.aclose()
    async with asyncio.timeout(5):  # transports close their sockets on the next loop turns
        while udp_sockets() != before:
            await asyncio.sleep(0)


async def test_advertised_addresses() -> None:
    machine = {
        str(lan_module._ip(ip.ip if isinstance(ip.ip, str) else ip.ip[0]))
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
    }
    v4 = await advertised_addresses("0.0.0.0")
    assert v4
    assert set(v4) <= machine
    assert all(not lan_module._ip(a).is_loopback for a in v4) or v4 == ["127.0.0.1"]
    assert all(lan_module._ip(a).version == 4 for a in v4)
    both = await advertised_addresses("::")
    assert set(v4) <= set(both)
    assert all(not lan_module._ip(a).is_link_local for a in both)
    assert await advertised_addresses("0.0.0.0", LOOPBACK) == ["127.0.0.1"]
    assert await advertised_addresses("192.0.2.9") == ["192.0.2.9"]
    assert await advertised_addresses("::1") == ["::1"]
    assert set(await advertised_addresses("localhost")) <= {"127.0.0.1", "::1"}


async def test_unresolvable_host_advertises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "not found")

    # Patched rather than a real failing lookup, which would query a DNS server.
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    assert await advertised_addresses("worker-host") == []


def test_txt_layout_round_trip() -> None:
    m = meta("w1", options={f"k{i}": "x" * 50 for i in range(30)})
    props = encode_txt(m, "ns1")
    assert props["txtvers"] == "1"
    assert props["ns"] == "ns1"
    assert int(props["mc"]) > 1
    assert all(len(k) + 1 + len(v.encode()) <= 255 for k, v in props.items())
    as_bytes = {k.encode(): v.encode() for k, v in props.items()}
    assert decode_txt(as_bytes, "ns1") == m
    assert decode_txt(as_bytes, None) == m
    with pytest.raises(ValueError, match="namespace"):
        decode_txt(as_bytes, "ns2")
    with pytest.raises(ValueError, match="too large"):
        encode_txt(meta("big", options={"k": "x" * 10_000}), None)


@pytest.mark.parametrize("bad", ["", "host", "host:", ":80", "host:port", "host:99999", "[::1]"])
def test_split_address_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_address(bad)


def test_split_address() -> None:
    assert split_address("[::1]:80") == ("::1", 80)
    assert split_address("10.0.0.1:1") == ("10.0.0.1", 1)
    assert split_address("node:65535") == ("node", 65535)


def test_validation() -> None:
    with pytest.raises(ValueError, match="namespace"):
        LanDiscovery("a/b")
    with pytest.raises(ValueError, match="service type"):
        LanDiscovery(service_type="distaff.local.")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        LanDiscovery(interfaces=["lo"])
    with pytest.raises(ValueError, match="record_ttl"):
        LanDiscovery(record_ttl=0)


def test_discovery_and_subscriber_pickle(disco: LanDiscovery) -> None:
    copy = pickle.loads(pickle.dumps(disco))
    assert copy.subscriber() == disco.subscriber()
    assert isinstance(copy.subscriber(), LanSubscriber)
    assert copy.subscriber().interfaces == ("127.0.0.1",)


async def test_a_record_that_does_not_resolve_is_retried_with_backoff(
    token: str, watcher: LogWatcher
) -> None:
    from zeroconf import DNSOutgoing, DNSPointer, const

    name = f"late-{token}"
    subscriber = dataclasses.replace(
        LanDiscovery(interfaces=LOOPBACK).subscriber(), resolve_timeout_ms=200
    )
    raw = AsyncZeroconf(interfaces=LOOPBACK)
    seen = Collector(subscriber)
    try:
        # only the pointer is announced: nobody answers for the instance yet
        pointer = DNSPointer(
            SERVICE_TYPE, const._TYPE_PTR, const._CLASS_IN, 120, f"{name}.{SERVICE_TYPE}"
        )
        out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
        out.add_answer_at_time(pointer, 0)
        async with asyncio.timeout(15):
            while not any(f"{name}." in m and "retry 3 in 2.0 s" in m for m in watcher.messages):
                raw.zeroconf.async_send(out)
                await asyncio.sleep(0.5)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=9,
            properties=encode_txt(meta(name), None),
            server=f"{name}.local.",
            parsed_addresses=LOOPBACK,
        )
        await raw.async_register_service(info, cooperating_responders=True)
        assert (await seen.next([name])).type is ADDED
    finally:
        await seen.aclose()
        await raw.async_close()
