"""OutputSlot: a call's output sink is made on its first line, once, from any thread."""

from __future__ import annotations

import asyncio
import threading

from distaff.runtime.worker.output import CallOutput, Origin, OutputSlot
from distaff.serialization.wire import Output, OutputKind

STDOUT = OutputKind.OUTPUT_STDOUT


class Slot(OutputSlot):
    """A slot whose sink sends into a list, counting how often it was made."""

    __slots__ = ("loop", "loop_thread", "opened", "sent")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.loop_thread = threading.get_ident()  # made on the loop, as a worker's are
        self.opened = 0
        self.sent: list[Output] = []

    def open_sink(self) -> CallOutput:
        self.opened += 1
        origin = Origin("routine", 1, "host", "worker")
        return CallOutput(self.sent.extend, origin, 100, self.loop, self.loop_thread)


def lines(slot: Slot) -> list[str]:
    return [line for output in slot.sent for line in output.text.split("\n")]


async def test_a_call_that_prints_nothing_makes_no_sink() -> None:
    slot = Slot(asyncio.get_running_loop())

    slot.close()

    assert slot.opened == 0
    assert slot.closed
    assert slot.sent == []
    assert not slot.write(STDOUT, "too late\n")  # the router writes it to the real stream
    assert slot.opened == 0


async def test_the_first_line_makes_the_sink_and_the_end_sends_the_rest() -> None:
    slot = Slot(asyncio.get_running_loop())

    assert slot.write(STDOUT, "one\ntw")
    assert slot.write(STDOUT, "o")
    slot.close()

    assert slot.opened == 1
    assert lines(slot) == ["one", "two"]
    assert not slot.write(STDOUT, "after\n")


async def test_threads_writing_their_first_lines_at_once_share_one_sink() -> None:
    slot = Slot(asyncio.get_running_loop())
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait(timeout=10)
        slot.write(STDOUT, f"thread {n}\n")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    slot.close()

    assert slot.opened == 1
    assert sorted(lines(slot)) == sorted(f"thread {n}" for n in range(8))
