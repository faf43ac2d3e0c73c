"""Arguments and values with large bytes: pickled into pieces, copied once, exact."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from distaff.serialization import tasks, wire

BIG = wire.DETACH_BYTES


class Block:
    """Holds a buffer and pickles it as numpy arrays do (a PickleBuffer of its memory)."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        return Block, (pickle.PickleBuffer(self.data),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and other.data == self.data


class Holder:
    """Not plain: cloudpickle takes it, with its large bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Holder) and other.data == self.data


def received(payload: wire.Payload) -> Any:
    """What the peer unpickles: the payload sent as a blob, read back as a slice."""
    envelope = wire.Envelope()
    envelope.frames.add(call=1).value.blob = 1
    _, blobs = wire.unpack(wire.decode(wire.encode((envelope, [payload]))))
    assert isinstance(blobs[0], memoryview)
    return tasks.loads(blobs[0], what="the value")


def test_a_large_bytes_argument_is_a_piece_of_the_payload_not_a_copy() -> None:
    data = bytes(range(256)) * (4 * BIG // 256)

    payload = tasks.encode_arguments((data, 1), {"key": "value"}, routine="r")

    assert isinstance(payload, wire.Pieces)
    assert any(part is data for part in payload.parts)
    assert len(payload) == len(bytes(payload)) > len(data)
    assert tasks.decode_arguments(bytes(payload)) == ((data, 1), {"key": "value"})


@pytest.mark.parametrize(
    "value",
    [
        bytes(BIG),
        "é" * BIG,
        [b"x" * BIG, 1, b"y" * (2 * BIG)],
        {"a": b"z" * BIG, "b": None},
        ((b"n" * BIG,), {}),
        Holder(b"h" * (3 * BIG)),
        [Holder(b"1" * BIG), Holder(b"1" * BIG)],
    ],
    ids=["bytes", "str", "list", "dict", "nested", "object", "objects"],
)
def test_values_in_pieces_arrive_exact(value: Any) -> None:
    payload = tasks.dumps(value, what="the result")

    assert isinstance(payload, wire.Pieces)
    assert received(payload) == value
    assert type(received(payload)) is type(value)


def test_a_mutable_buffer_is_copied_when_pickled_so_later_changes_are_not_sent() -> None:
    array = bytearray(b"a" * (2 * BIG))
    block = Block(bytearray(b"b" * (2 * BIG)))

    plain = tasks.dumps([array, b"q" * BIG], what="the result")
    not_plain = tasks.dumps([block, b"q" * BIG], what="the result")
    array[:] = b"!" * len(array)
    block.data[:] = b"!" * len(block.data)

    assert isinstance(plain, wire.Pieces)
    assert isinstance(not_plain, wire.Pieces)
    assert received(plain) == [bytearray(b"a" * (2 * BIG)), b"q" * BIG]
    assert received(not_plain) == [Block(bytearray(b"b" * (2 * BIG))), b"q" * BIG]


def test_small_payloads_stay_one_bytes_object() -> None:
    for value in [b"x" * (BIG - 100), ((1, "a"), {}), Holder(b"small"), bytearray(2 * BIG)]:
        payload = tasks.dumps(value, what="the result")
        assert type(payload) is bytes, value
        assert pickle.loads(payload) == value
