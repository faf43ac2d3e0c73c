"""The session state machines, driven without I/O through every interleaving.

A caller session and a worker session are joined by two in-order queues of
envelopes that Hypothesis delivers, delays and cuts at will, while calls are
opened, stepped, cancelled, answered, drained and retried by the proxy's rule
(only a call refused, or lost before it was written, goes to another worker).
Invariants: a call whose Start was written is never started again anywhere;
every call ends in exactly one final state on each side.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from distaff.serialization import session as s
from distaff.serialization import wire
from distaff.serialization.wire import PROTOCOL_VERSION, Envelope, Output, OutputKind, StepKind


def large(what: str) -> bytes:
    """A payload big enough to travel as a blob, and unique to ``what``."""
    return what.encode().ljust(wire.DETACH_BYTES, b".")


def sent_as(payload: bytes, task: str) -> wire.Payload:
    """``payload`` as a session gets it: large ones of every other task in pieces."""
    if len(payload) < wire.DETACH_BYTES or int(task.lstrip("t") or 0) % 2:
        return payload
    return wire.Pieces([payload[:7], payload[7:-5], payload[-5:]])


def through_the_wire(message: wire.Message) -> wire.Message:
    """What the peer's deserializer makes of ``message`` (blobs become slices)."""
    return wire.decode(wire.encode(message))


def envelope_of(message: wire.Message) -> Envelope:
    return message[0] if isinstance(message, tuple) else message


def fields(
    task_id: str, generator: bool = False, proxy: str = "", big: bool = False
) -> s.StartFields:
    return s.StartFields(
        task_id=task_id,
        routine=b"R",
        arguments=sent_as(large(f"arguments of {task_id}"), task_id) if big else b"A",
        generator=generator,
        proxy_id=proxy,
        proxy=b"P" if proxy else b"",
    )


class Link:
    """One caller session joined to one worker session."""

    def __init__(self, worker: str) -> None:
        self.caller = s.CallerSession()
        self.worker = s.WorkerSession(worker)
        self.to_worker: collections.deque[wire.Message] = collections.deque()
        self.to_caller: collections.deque[wire.Message] = collections.deque()
        self.running: dict[int, tuple[str, bool]] = {}  # worker call -> task id, generator


class Sessions(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.workers = itertools.count()
        self.link = Link(f"w{next(self.workers)}")
        self.task_ids = itertools.count()
        self.started: collections.Counter[str] = collections.Counter()  # task -> Started events
        self.finals: collections.Counter[tuple[int, int]] = collections.Counter()
        self.opened: dict[tuple[int, int], str] = {}  # (link, call) -> task
        self.link_no = 0
        self.retry: list[tuple[str, bool]] = []
        self.generators: dict[str, bool] = {}
        self.big: dict[str, bool] = {}  # tasks whose payloads travel as blobs
        self.written: set[str] = set()  # tasks whose Start may have reached a worker

    # caller side

    def _final(self, call: int) -> None:
        self.finals[(self.link_no, call)] += 1

    def _apply_caller(self, events: list[s.Event]) -> None:
        for event in events:
            if isinstance(event, s.Output):
                # output reaches the call that produced it, and only while it is open
                assert self.finals[(self.link_no, event.call)] == 0, "output after the end"
                task = self.opened[(self.link_no, event.call)]
                assert event.output.text == f"printed by {task}"
            if isinstance(event, (s.Item, s.Result)):
                task = self.opened[(self.link_no, event.call)]
                expected = large(f"value of {task}") if self.big[task] else b"v"
                assert bytes(event.payload) == expected
            if isinstance(event, s.FINAL):
                self._final(event.call)
                task = self.opened[(self.link_no, event.call)]
                never_ran = isinstance(event, s.Refused) or (
                    isinstance(event, s.Lost) and not event.may_have_run
                )
                if never_ran:
                    self.retry.append((task, self.generators[task]))

    @precondition(lambda self: self.link.caller.accepts_calls)
    @rule(generator=st.booleans(), proxy=st.booleans(), big=st.booleans())
    def open_call(self, generator: bool, proxy: bool, big: bool) -> None:
        task = f"t{next(self.task_ids)}"
        self.generators[task] = generator
        self.big[task] = big
        call = self.link.caller.open_call(fields(task, generator, "p1" if proxy else "", big))
        self.opened[(self.link_no, call)] = task

    @precondition(lambda self: self.link.caller.accepts_calls and self.retry)
    @rule()
    def retry_elsewhere(self) -> None:
        task, generator = self.retry.pop(0)
        assert task not in self.written, f"{task} may have run and was sent again"
        call = self.link.caller.open_call(fields(task, generator, big=self.big[task]))
        self.opened[(self.link_no, call)] = task

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        calls = [c for (n, c) in self.opened if n == self.link_no]
        if calls:
            call = data.draw(st.sampled_from(calls))
            if self.link.caller.cancel(call):  # the caller's own final state
                self._final(call)

    @rule(data=st.data(), kind=st.sampled_from([StepKind.STEP_NEXT, StepKind.STEP_CLOSE]))
    def step(self, data: st.DataObject, kind: int) -> None:
        calls = [c for (n, c) in self.opened if n == self.link_no]
        if calls:
            self.link.caller.step(data.draw(st.sampled_from(calls)), kind)

    @rule()
    def caller_writes(self) -> None:
        for message in self.link.caller.data_to_send():
            for frame in envelope_of(message).frames:
                if frame.HasField("start"):
                    self.written.add(frame.start.task_id)
            self.link.to_worker.append(through_the_wire(message))

    @precondition(lambda self: self.link.to_caller and not self.link.caller.closed)
    @rule()
    def caller_reads(self) -> None:
        self._apply_caller(self.link.caller.receive(self.link.to_caller.popleft()))

    # worker side

    @precondition(lambda self: self.link.to_worker)
    @rule()
    def worker_reads(self) -> None:
        for event in self.link.worker.receive(self.link.to_worker.popleft()):
            if isinstance(event, s.Started):
                task = event.start.task_id
                sent = large(f"arguments of {task}") if self.big[task] else b"A"
                assert bytes(event.arguments) == sent
                self.started[event.start.task_id] += 1
                self.link.running[event.call] = (event.start.task_id, event.start.generator)
            elif isinstance(event, s.CancelRequested):
                self.link.worker.forget(event.call)
                del self.link.running[event.call]

    @rule(data=st.data(), outcome=st.sampled_from(["ack", "item", "output", "finish", "error"]))
    def worker_acts(self, data: st.DataObject, outcome: str) -> None:
        if not self.link.running:
            return
        call = data.draw(st.sampled_from(sorted(self.link.running)))
        task, generator = self.link.running[call]
        value = sent_as(large(f"value of {task}"), task) if self.big[task] else b"v"
        worker = self.link.worker
        if outcome == "ack":
            worker.ack(call)
        elif outcome == "item" and generator:
            worker.item(call, value)
        elif outcome == "output":
            task, _ = self.link.running[call]
            worker.output(call, Output(kind=OutputKind.OUTPUT_STDOUT, text=f"printed by {task}"))
        elif outcome == "error":
            worker.error(call, b"e")
            del self.link.running[call]
        elif outcome == "finish":
            (worker.done(call) if generator else worker.result(call, value))
            del self.link.running[call]

    @rule()
    def worker_drains(self) -> None:
        self.link.worker.drain()

    @rule()
    def worker_writes(self) -> None:
        self.link.to_caller.extend(map(through_the_wire, self.link.worker.data_to_send()))

    @rule()
    def connection_lost(self) -> None:
        self._apply_caller(list(self.link.caller.lose()))
        self.link = Link(f"w{next(self.workers)}")
        self.link_no += 1

    @invariant()
    def started_at_most_once(self) -> None:
        assert all(n == 1 for n in self.started.values()), self.started

    @invariant()
    def at_most_one_final_per_call(self) -> None:
        assert all(n == 1 for n in self.finals.values()), self.finals

    @invariant()
    def closed_sessions_hold_no_call(self) -> None:
        if self.link.caller.closed:
            assert not self.link.caller.calls

    def teardown(self) -> None:
        # the stream ends: every call has exactly one final state
        self._apply_caller(list(self.link.caller.lose()))
        for key in self.opened:
            assert self.finals[key] == 1, f"call {key} ended {self.finals[key]} times"


TestSessionInterleavings = Sessions.TestCase
TestSessionInterleavings.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)


# examples a reader should see


def handshake(caller: s.CallerSession, worker: s.WorkerSession) -> None:
    for envelope in caller.data_to_send():
        worker.receive(envelope)
    for envelope in worker.data_to_send():
        caller.receive(envelope)


def test_nothing_but_the_hello_goes_out_before_the_worker_answers() -> None:
    caller = s.CallerSession()
    call = caller.open_call(fields("t"))

    (hello,) = caller.data_to_send()

    assert [f.WhichOneof("kind") for f in hello.frames] == ["hello"]
    assert hello.frames[0].hello.protocol == PROTOCOL_VERSION
    assert caller.data_to_send() == []
    assert caller.phase(call) is s.Phase.QUEUED


def test_the_open_calls_can_be_read_but_not_changed_through_calls() -> None:
    caller = s.CallerSession()
    call = caller.open_call(fields("t"))

    assert list(caller.calls) == [call]
    with pytest.raises(TypeError):
        del caller.calls[call]  # type: ignore[attr-defined]
    caller.cancel(call)
    assert not caller.calls


def test_a_call_lost_before_it_was_written_never_ran() -> None:
    caller = s.CallerSession()
    call = caller.open_call(fields("t"))
    caller.data_to_send()

    (lost,) = caller.lose()

    assert lost == s.Lost(call, None, may_have_run=False)


def test_a_written_call_lost_may_have_run_even_without_an_ack() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    call = caller.open_call(fields("t"))
    caller.data_to_send()

    (lost,) = caller.lose()

    assert caller.phase(call) is None
    assert lost.may_have_run


def test_a_cancelled_queued_call_is_taken_back_with_its_proxy_blob() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    first = caller.open_call(fields("t1", proxy="p"))
    caller.cancel(first)
    caller.open_call(fields("t2", proxy="p"))

    (envelope,) = caller.data_to_send()

    starts = [f.start for f in envelope.frames if f.HasField("start")]
    assert [(x.task_id, x.proxy) for x in starts] == [("t2", b"P")]


def test_a_drain_refuses_calls_not_yet_written_at_once() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    call = caller.open_call(fields("t"))
    worker.drain()

    events = caller.receive(worker.data_to_send()[0])

    assert events == [s.Draining(), s.Refused(call, None, "the worker is draining")]
    assert not caller.accepts_calls
    with pytest.raises(s.ProtocolError):
        caller.open_call(fields("t2"))


def test_a_worker_refuses_a_replayed_call_id() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    caller.open_call(fields("t"))
    (envelope,) = caller.data_to_send()
    worker.receive(envelope)

    with pytest.raises(s.ProtocolError, match="started twice"):
        worker.receive(envelope)


def test_a_worker_sends_one_final_frame_per_call() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    call = caller.open_call(fields("t"))
    (started,) = worker.receive(caller.data_to_send()[0])
    worker.result(started.call, b"r")
    worker.error(started.call, b"late")
    worker.ack(started.call)

    events = caller.receive(worker.data_to_send()[0])

    assert events == [s.Result(call, None, b"r")]


def test_an_answer_says_the_call_was_accepted_and_an_ack_says_it_alone() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    quick, slow = caller.open_call(fields("quick")), caller.open_call(fields("slow"))
    first, second = worker.receive(caller.data_to_send()[0])
    worker.result(first.call, b"r")  # answered at once: the answer is the first word
    worker.ack(second.call)  # still running: acknowledged first

    events = caller.receive(worker.data_to_send()[0])

    assert events == [s.Result(quick, None, b"r"), s.Accepted(slow, None)]
    assert caller.phase(slow) is s.Phase.ACCEPTED
    worker.result(second.call, b"late")
    assert caller.receive(worker.data_to_send()[0]) == [s.Result(slow, None, b"late")]


def test_a_wrong_protocol_version_is_refused_naming_both() -> None:
    worker = s.WorkerSession("w")
    envelope = Envelope()
    envelope.frames.add().hello.protocol = PROTOCOL_VERSION + 7

    with pytest.raises(
        s.ProtocolError, match=rf"speaks {PROTOCOL_VERSION}.*{PROTOCOL_VERSION + 7}"
    ):
        worker.receive(envelope)


def test_a_calls_actor_chain_reaches_the_worker_with_its_start() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    chained = dataclasses.replace(fields("t1"), chain="chain-7")
    caller.open_call(chained)
    caller.open_call(fields("t2"))

    events = [e for env in caller.data_to_send() for e in worker.receive(env)]

    starts = [e.start for e in events if isinstance(e, s.Started)]
    assert [(start.task_id, start.chain) for start in starts] == [("t1", "chain-7"), ("t2", "")]


def test_output_frames_reach_their_call_and_stop_at_its_end() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    call = caller.open_call(fields("t"))
    (started,) = worker.receive(caller.data_to_send()[0])
    line = Output(kind=OutputKind.OUTPUT_STDERR, text="hello", pid=7)
    worker.output(started.call, line)
    worker.result(started.call, b"r")
    worker.output(started.call, line)  # after the final frame: dropped

    events = caller.receive(worker.data_to_send()[0])

    assert events == [
        s.Accepted(call, None),
        s.Output(call, None, line),
        s.Result(call, None, b"r"),
    ]


def test_a_draining_worker_counts_the_calls_it_refuses() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w", draining=True)
    caller.data_to_send()  # the hello; the worker answers with a drain too
    late = Envelope()
    late.frames.add().hello.protocol = PROTOCOL_VERSION
    for call in (1, 2):
        frame = late.frames.add()
        frame.call = call
        frame.start.task_id = f"t{call}"

    assert worker.receive(late) == []
    assert worker.rejected == 2
    assert [f.reject.reason for f in worker.data_to_send()[0].frames if f.HasField("reject")] == [
        "the worker is draining"
    ] * 2


def test_large_payloads_arrive_as_slices_of_the_received_message() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    call = caller.open_call(fields("t", big=True))
    (message,) = caller.data_to_send()
    assert isinstance(message, tuple)  # the arguments travel outside the envelope
    assert not envelope_of(message).frames[0].start.arguments

    data = wire.encode(message)
    (started,) = worker.receive(wire.decode(data))
    worker.result(started.call, large("the result"))
    reply = wire.encode(worker.data_to_send()[0])
    (result,) = caller.receive(wire.decode(reply))

    assert isinstance(started.arguments, memoryview)
    assert started.arguments.obj is data
    assert started.arguments == large("arguments of t")
    assert isinstance(result, s.Result)
    assert result.call == call
    assert isinstance(result.payload, memoryview)
    assert result.payload.obj is reply
    assert result.payload == large("the result")


def test_any_protobuf_reader_parses_a_message_with_blobs() -> None:
    envelope = Envelope()
    envelope.frames.add(call=3).value.blob = 1

    parsed = Envelope.FromString(wire.encode((envelope, [b"x" * 300])))

    assert list(parsed.blobs) == [b"x" * 300]
    assert parsed.frames[0].call == 3
    assert parsed.frames[0].value.blob == 1


def test_a_truncated_blob_or_a_missing_one_is_refused() -> None:
    whole = wire.encode((Envelope(), [b"x" * 300]))
    with pytest.raises(wire.DecodeError, match="runs past the end"):
        wire.decode(whole[:200])
    with pytest.raises(wire.DecodeError, match="truncated"):
        wire.decode(whole[:2])

    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    caller.open_call(fields("t"))
    (started,) = worker.receive(caller.data_to_send()[0])
    bad = Envelope()
    frame = bad.frames.add(call=started.call)
    frame.value.blob = 2
    with pytest.raises(s.ProtocolError, match="blob 2 of 1"):
        caller.receive(wire.decode(wire.encode((bad, [b"only one"]))))


def test_a_cancelled_queued_call_leaves_its_blob_behind() -> None:
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    first = caller.open_call(fields("t1", big=True))
    caller.open_call(fields("t2", big=True))
    caller.cancel(first)

    (message,) = caller.data_to_send()
    (started,) = worker.receive(wire.decode(wire.encode(message)))

    assert isinstance(message, tuple)
    assert [len(b) for b in message[1]] == [0, wire.DETACH_BYTES]
    assert started.arguments == large("arguments of t2")


def test_oversized_envelopes_split_with_each_frame_keeping_its_blob(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "MAX_MESSAGE_BYTES", 3 * wire.DETACH_BYTES)
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    handshake(caller, worker)
    for task in ("t1", "t2", "t3", "t4"):
        caller.open_call(fields(task, big=task != "t2"))

    messages = caller.data_to_send()
    received = [e for m in messages for e in worker.receive(wire.decode(wire.encode(m)))]

    assert len(messages) == 4
    assert [(e.start.task_id, bytes(e.arguments)) for e in received] == [
        ("t1", large("arguments of t1")),
        ("t2", b"A"),
        ("t3", large("arguments of t3")),
        ("t4", large("arguments of t4")),
    ]
