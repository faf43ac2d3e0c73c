"""WorkerMetadata's msgpack codec: round trips, and ValueError for bad input."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distaff.serialization.metadata import (
    SCHEMA_VERSION,
    WorkerMetadata,
    decode_metadata,
    encode_metadata,
)

texts = st.text(max_size=40)
non_empty = st.text(min_size=1, max_size=40)

metadata = st.builds(
    WorkerMetadata,
    uid=non_empty,
    address=non_empty,
    pid=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    host=texts,
    version=texts,
    tags=st.frozensets(texts, max_size=8),
    secure=st.booleans(),
    options=st.dictionaries(texts, texts, max_size=8),
)

# Any value msgpack can carry.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | texts
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)


def valid_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"v": SCHEMA_VERSION, "uid": "w1", "address": "h:1"}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


@given(metadata)
def test_round_trip(m: WorkerMetadata) -> None:
    assert decode_metadata(encode_metadata(m)) == m


@given(metadata)
def test_encoding_is_the_documented_map(m: WorkerMetadata) -> None:
    record = msgpack.unpackb(encode_metadata(m))
    assert record == {
        "v": 1,
        "uid": m.uid,
        "address": m.address,
        "pid": m.pid,
        "host": m.host,
        "version": m.version,
        "tags": sorted(m.tags),
        "secure": m.secure,
        "options": dict(m.options),
        "python": m.python,
        "protocol": m.protocol,
        "cloudpickle": m.cloudpickle,
    }


@given(metadata, st.dictionaries(st.text(min_size=3), msgpack_values, max_size=3))
def test_unknown_keys_are_ignored(m: WorkerMetadata, extra: dict[str, Any]) -> None:
    record = msgpack.unpackb(encode_metadata(m))
    extra = {k: v for k, v in extra.items() if k not in record}
    assert decode_metadata(msgpack.packb({**record, **extra})) == m


def test_minimal_record_gets_defaults() -> None:
    assert decode_metadata(msgpack.packb(valid_record())) == WorkerMetadata("w1", "h:1")


@given(st.binary(max_size=200))
def test_garbage_bytes_decode_or_raise_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        assert isinstance(decode_metadata(data), WorkerMetadata)


@given(metadata, st.data())
def test_truncated_encoding_raises_value_error(m: WorkerMetadata, data: st.DataObject) -> None:
    encoded = encode_metadata(m)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(ValueError, match="not valid msgpack"):
        decode_metadata(encoded[:cut])


@given(metadata, st.data())
def test_corrupted_encoding_decodes_or_raises_value_error(
    m: WorkerMetadata, data: st.DataObject
) -> None:
    encoded = bytearray(encode_metadata(m))
    at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[at] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(ValueError):
        assert isinstance(decode_metadata(bytes(encoded)), WorkerMetadata)


@given(
    st.dictionaries(
        st.sampled_from(
            ["v", "uid", "address", "pid", "host", "version", "tags", "secure", "options"]
        ),
        msgpack_values,
    )
)
def test_any_record_decodes_or_raises_value_error(fields: dict[str, Any]) -> None:
    try:
        decoded = decode_metadata(msgpack.packb(valid_record(**fields)))
    except ValueError:
        return
    assert decoded.uid
    assert decoded.address


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc1", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (msgpack.packb(valid_record()) + b"\x00", "not valid msgpack"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb("text"), "must be a map"),
        (msgpack.packb(valid_record(v=2)), "unsupported worker metadata schema 2"),
        (msgpack.packb(valid_record(v=...)), "unsupported worker metadata schema"),
        (msgpack.packb(valid_record(uid=...)), "missing or mistypes"),
        (msgpack.packb(valid_record(address=...)), "missing or mistypes"),
        (msgpack.packb(valid_record(uid="")), "non-empty"),
        (msgpack.packb(valid_record(uid=7)), "non-empty"),
        (msgpack.packb(valid_record(address=b"h:1")), "non-empty"),
        (msgpack.packb(valid_record(pid="many")), "mistypes"),
        (msgpack.packb(valid_record(pid=None)), "mistypes"),
        (msgpack.packb(valid_record(tags=5)), "mistypes"),
        (msgpack.packb(valid_record(options=5)), "mistypes"),
        (msgpack.packb(valid_record(options="ab")), "mistypes"),
    ],
)
def test_bad_input_raises_value_error(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_metadata(data)


def test_infinite_pid_raises_value_error() -> None:
    with pytest.raises(ValueError, match="mistypes"):
        decode_metadata(msgpack.packb(valid_record(pid=float("inf"))))
