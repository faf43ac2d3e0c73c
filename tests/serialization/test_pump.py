"""The write pump: one write in flight; at the next turn, or at once when eager.

The writes here are coroutines this test controls (each waits on a future
the test resolves), standing in for a gRPC stream's ``write``: what is under
test is the pump's ordering, batching, failure and cancellation rules; the
whole suite runs it over real gRPC streams.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from distaff.serialization.wire import Envelope, Pump


class Stream:
    """A stream whose writes finish when the test says so."""

    def __init__(self) -> None:
        self.queued: list[Envelope] = []
        self.started: list[Envelope] = []
        self.written: list[Envelope] = []
        self.gates: list[asyncio.Future[None]] = []
        self.cancelled = 0
        self.on_take: Any = None
        self.takes: list[int] = []  # how many envelopes each non-empty take() returned

    def take(self) -> list[Envelope]:
        queued, self.queued = self.queued, []
        if queued:
            self.takes.append(len(queued))
        if self.on_take is not None:  # runs after the envelopes were taken
            self.on_take()
        return queued

    async def write(self, envelope: Envelope) -> None:
        self.started.append(envelope)
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        try:
            await gate
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.written.append(envelope)

    def finish(self, error: BaseException | None = None) -> None:
        gate = next(g for g in self.gates if not g.done())
        if error is None:
            gate.set_result(None)
        else:
            gate.set_exception(error)


def envelope(i: int) -> Envelope:
    message = Envelope()
    message.load.running = i
    return message


def running(stream: Stream) -> tuple[Pump, asyncio.Task[None]]:
    """A pump over ``stream``, its ``run`` task, and envelope(1) being written."""
    pump = Pump(stream.take, stream.write)
    runner = asyncio.create_task(pump.run())
    stream.queued.append(envelope(1))
    pump.wake(eager=True)
    return pump, runner


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_an_eager_wake_of_an_idle_pump_starts_the_write_inside_wake() -> None:
    stream = Stream()
    pump = Pump(stream.take, stream.write)
    stream.queued.append(envelope(1))

    pump.wake(eager=True)

    assert stream.started == [envelope(1)]  # no await happened in between


async def test_a_plain_wake_writes_everything_queued_in_this_turn_at_the_next() -> None:
    stream = Stream()
    pump = Pump(stream.take, stream.write)
    for i in range(3):
        stream.queued.append(envelope(i))
        pump.wake()
    assert stream.started == []

    await asyncio.sleep(0)

    assert stream.takes == [3]  # one look at the session took all three
    assert stream.started == [envelope(0)]  # and the writes go one at a time


async def test_one_write_at_a_time_and_what_piles_up_goes_next_in_order() -> None:
    stream = Stream()
    pump = Pump(stream.take, stream.write)
    stream.queued.append(envelope(1))
    pump.wake(eager=True)
    stream.queued += [envelope(2), envelope(3)]
    pump.wake(eager=True)
    pump.wake(eager=True)
    assert stream.started == [envelope(1)]

    stream.finish()
    await turns()
    assert stream.started == [envelope(1), envelope(2)]
    stream.finish()
    await turns()
    stream.finish()
    await turns()

    assert stream.written == [envelope(1), envelope(2), envelope(3)]


async def test_close_lets_run_return_once_everything_is_written() -> None:
    stream = Stream()
    pump, runner = running(stream)
    pump.close()
    await turns()
    assert not runner.done()  # a write is still in flight

    stream.finish()
    await asyncio.wait_for(runner, 5)

    assert stream.written == [envelope(1)]


async def test_a_failed_write_ends_run_with_its_error_and_nothing_more_is_written() -> None:
    stream = Stream()
    pump, runner = running(stream)
    stream.queued.append(envelope(2))
    pump.wake(eager=True)

    stream.finish(ConnectionError("the stream broke"))

    with pytest.raises(ConnectionError, match="the stream broke"):
        await asyncio.wait_for(runner, 5)
    pump.wake(eager=True)
    assert stream.started == [envelope(1)]


async def test_cancelling_run_abandons_the_write_in_flight() -> None:
    stream = Stream()
    pump, runner = running(stream)
    await turns()

    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner

    assert stream.cancelled == 1
    stream.queued.append(envelope(2))
    pump.wake(eager=True)
    assert stream.started == [envelope(1)]


async def test_abandoning_a_write_cancels_the_future_it_awaits() -> None:
    # gRPC's write awaits a future its completion queue settles later; left
    # pending, a stream cancelled meanwhile would fail it with an exception
    # nobody reads ("Future exception was never retrieved" at exit)
    stream = Stream()
    _, runner = running(stream)
    await turns()
    (gate,) = stream.gates

    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner

    assert gate.cancelled()
    assert stream.cancelled == 1


async def test_cancelling_the_producer_does_not_cancel_its_write() -> None:
    stream = Stream()
    pump = Pump(stream.take, stream.write)

    async def producer() -> None:
        stream.queued.append(envelope(1))
        pump.wake(eager=True)
        await asyncio.sleep(10)

    task = asyncio.create_task(producer())
    await turns()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stream.finish()
    await turns()

    assert stream.cancelled == 0
    assert stream.written == [envelope(1)]


async def test_a_wake_from_inside_take_waits_its_turn() -> None:
    stream = Stream()
    pump = Pump(stream.take, stream.write)

    def wake_again() -> None:
        stream.on_take = None
        stream.queued.append(envelope(2))
        pump.wake(eager=True)  # re-entrant: must not start a write of its own

    stream.on_take = wake_again
    stream.queued.append(envelope(1))
    pump.wake(eager=True)  # take() hands over envelope(1), queues envelope(2), wakes

    assert stream.started == [envelope(1)]
    assert len(stream.gates) == 1  # one write in flight
    stream.finish()
    await turns()
    assert stream.started == [envelope(1), envelope(2)]
