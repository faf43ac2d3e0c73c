"""Tests for the exception codec: classes, chains and tracebacks travel."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distaff import _exceptions
from distaff._exceptions import RemoteException, RpcError, SerializationError
from distaff.serialization.exceptions import decode_exception, encode_exception


class CustomError(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message, code)
        self.code = code


class NoNewError(Exception):
    def __new__(cls, *args: object) -> NoNewError:
        if args:
            raise TypeError("NoNewError takes no arguments")
        return super().__new__(cls)

    def __init__(self) -> None:
        super().__init__()


class TwoPartError(Exception):
    """Passes a derived message to ``super()``: unpickling calls it with one arg."""

    def __init__(self, part: str, other: str) -> None:
        super().__init__(f"{part} and {other}")


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def fail_with(exc: BaseException) -> None:
    raise exc


def caught(func: Callable[..., object], *args: Any) -> BaseException:
    try:
        func(*args)
    except BaseException as exc:
        return exc
    raise AssertionError(f"{func.__name__} did not raise")


def round_trip(exc: BaseException) -> BaseException:
    return decode_exception(encode_exception(exc))


def frames_of(exc: BaseException) -> list[tuple[str, str, int | None]]:
    return [(f.filename, f.name, f.lineno) for f in traceback.extract_tb(exc.__traceback__)]


def formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_builtin_exception_keeps_type_and_args() -> None:
    decoded = round_trip(ValueError("bad value", 3))

    assert type(decoded) is ValueError
    assert decoded.args == ("bad value", 3)


def test_custom_exception_keeps_attributes_and_notes() -> None:
    original = CustomError("custom", code=7)
    original.detail = {"key": [1, 2]}  # type: ignore[attr-defined]
    original.add_note("first note")
    original.add_note("second note")

    decoded = round_trip(original)

    assert type(decoded) is CustomError
    assert decoded.args == ("custom", 7)
    assert vars(decoded) == vars(original)
    assert decoded.__notes__ == ["first note", "second note"]


def test_notes_survive_a_custom_reduce_that_drops_the_dict() -> None:
    original = RpcError("UNAVAILABLE", "down", target="host:1")
    original.add_note("while calling f")

    decoded = round_trip(original)

    assert type(decoded) is RpcError
    assert (decoded.code, decoded.details, decoded.target) == (
        "UNAVAILABLE",
        "down",
        "host:1",
    )
    assert decoded.__notes__ == ["while calling f"]


def _raise_from() -> None:
    try:
        raise KeyError("inner")
    except KeyError as inner:
        raise CustomError("outer") from inner


def test_explicit_cause_is_restored() -> None:
    decoded = round_trip(caught(_raise_from))

    assert isinstance(decoded.__cause__, KeyError)
    assert decoded.__cause__.args == ("inner",)
    assert decoded.__context__ is decoded.__cause__
    assert decoded.__suppress_context__ is True
    assert "direct cause of the following exception" in formatted(decoded)


def _raise_in_handler() -> None:
    try:
        raise KeyError("first")
    except KeyError:
        # No "from": the implicit __context__ is what this helper is for.
        raise ValueError("second")  # noqa: B904


def test_implicit_context_is_restored() -> None:
    decoded = round_trip(caught(_raise_in_handler))

    assert decoded.__cause__ is None
    assert isinstance(decoded.__context__, KeyError)
    assert decoded.__suppress_context__ is False
    assert "During handling of the above exception" in formatted(decoded)


def _raise_from_none() -> None:
    try:
        raise KeyError("hidden")
    except KeyError:
        raise ValueError("shown") from None


def test_raise_from_none_keeps_the_context_suppressed() -> None:
    decoded = round_trip(caught(_raise_from_none))

    assert decoded.__cause__ is None
    assert isinstance(decoded.__context__, KeyError)
    assert decoded.__suppress_context__ is True
    assert "hidden" not in formatted(decoded)


def test_exception_shared_in_the_chain_is_decoded_once() -> None:
    shared = KeyError("shared")
    original = ValueError("top")
    original.__cause__ = shared
    original.__context__ = shared

    decoded = round_trip(original)

    assert decoded.__cause__ is decoded.__context__


def test_cyclic_chain_decodes_to_the_same_cycle() -> None:
    first, second = ValueError("first"), KeyError("second")
    first.__context__ = second
    second.__context__ = first

    decoded = round_trip(first)

    assert decoded.__context__ is not None
    assert decoded.__context__.__context__ is decoded


def test_traceback_shows_the_remote_frames() -> None:
    original = caught(fail_with, CustomError("boom"))

    decoded = round_trip(original)

    assert isinstance(decoded.__traceback__, types.TracebackType)
    assert frames_of(decoded) == frames_of(original)
    text = formatted(decoded)
    assert f'File "{__file__}"' in text
    assert "in fail_with" in text


def test_chained_tracebacks_travel_with_each_exception() -> None:
    original = caught(_raise_from)

    decoded = round_trip(original)

    assert original.__cause__ is not None
    assert decoded.__cause__ is not None
    assert frames_of(decoded.__cause__) == frames_of(original.__cause__)


def _recurse() -> None:
    _recurse()


def test_recursion_error_traceback_of_a_thousand_frames_survives() -> None:
    original = caught(_recurse)

    decoded = round_trip(original)

    assert type(decoded) is RecursionError
    assert frames_of(decoded) == frames_of(original)


def test_unpicklable_attribute_falls_back_to_remote_exception() -> None:
    original = caught(_raise_from)
    original.lock = threading.Lock()  # type: ignore[attr-defined]

    decoded = round_trip(original)

    assert isinstance(decoded, RemoteException)
    assert decoded.type_name == f"{__name__}.CustomError"
    assert decoded.message == str(original)
    assert "in _raise_from" in decoded.remote_traceback
    assert "CustomError: ('outer', 0)" in decoded.remote_traceback
    assert frames_of(decoded) == frames_of(original)
    # Only the unpicklable member is replaced; its cause stays itself.
    assert type(decoded.__cause__) is KeyError


def test_init_signature_at_odds_with_args_still_arrives_as_itself() -> None:
    # TwoPartError(*args) fails, so plain unpickling cannot rebuild it; the
    # codec rebuilds it from class, args and attributes without __init__.
    original = caught(fail_with, TwoPartError("this", "that"))

    decoded = round_trip(original)

    assert type(decoded) is TwoPartError
    assert decoded.args == original.args
    assert vars(decoded) == vars(original)
    assert str(decoded) == "this and that"
    assert "in fail_with" in formatted(decoded)


def test_unrebuildable_exception_falls_back_to_remote_exception() -> None:
    original = caught(fail_with, TwoPartError("this", "that"))
    # a class whose __new__ rejects its args cannot be rebuilt either way
    original.__class__ = NoNewError

    decoded = round_trip(original)

    assert isinstance(decoded, RemoteException)
    assert decoded.type_name == f"{__name__}.NoNewError"
    assert "in fail_with" in decoded.remote_traceback


def test_class_missing_on_the_decoding_side_falls_back_to_remote_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("distaff_test_vanishing_module")
    # A __file__ makes cloudpickle pickle the class by reference, like any
    # installed module the caller may lack.
    module.__file__ = "/nonexistent/distaff_test_vanishing_module.py"
    exec("class VanishingError(Exception):\n    pass\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    data = encode_exception(module.VanishingError("gone"))
    monkeypatch.delitem(sys.modules, module.__name__)

    decoded = decode_exception(data)

    assert isinstance(decoded, RemoteException)
    assert decoded.type_name == "distaff_test_vanishing_module.VanishingError"
    assert decoded.message == "gone"


def test_failing_str_still_round_trips_as_itself() -> None:
    decoded = round_trip(caught(fail_with, UnprintableError("x")))

    assert type(decoded) is UnprintableError
    assert decoded.args == ("x",)


def test_failing_str_on_an_unpicklable_exception_gives_a_placeholder_message() -> None:
    original = UnprintableError("x")
    original.lock = threading.Lock()  # type: ignore[attr-defined]

    decoded = round_trip(original)

    assert isinstance(decoded, RemoteException)
    assert decoded.type_name == f"{__name__}.UnprintableError"
    assert decoded.message == "<exception str() failed>"


def test_lone_surrogates_in_text_survive() -> None:
    original = ValueError("bad path \udc80")
    original.lock = threading.Lock()  # type: ignore[attr-defined]

    decoded = round_trip(original)

    assert isinstance(decoded, RemoteException)
    assert decoded.message == "bad path \udc80"


@pytest.mark.parametrize(
    "original",
    [
        KeyboardInterrupt(),
        SystemExit(3),
        asyncio.CancelledError("stop"),
        GeneratorExit(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_base_exceptions_round_trip(original: BaseException) -> None:
    decoded = round_trip(original)

    assert type(decoded) is type(original)
    assert decoded.args == original.args


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1 definitely not msgpack",
        encode_exception(ValueError("truncated"))[:-5],
        msgpack.packb(42),
        msgpack.packb({"v": 99, "chain": []}),
        msgpack.packb({"v": 1, "chain": []}),
        msgpack.packb({"v": 1, "chain": [{"type": "x"}]}),
        msgpack.packb(
            {
                "v": 1,
                "chain": [
                    {
                        "type": "builtins.ValueError",
                        "message": "",
                        "text": "",
                        "frames": [],
                        "pickle": None,
                        "cause": 5,
                        "context": None,
                        "suppress": False,
                    }
                ],
            }
        ),
        msgpack.packb(
            {
                "v": 1,
                "chain": [
                    {
                        "type": "builtins.ValueError",
                        "message": "",
                        "text": "",
                        "frames": [["file.py", 3]],
                        "pickle": None,
                        "cause": None,
                        "context": None,
                        "suppress": False,
                    }
                ],
            }
        ),
    ],
    ids=[
        "empty",
        "not-msgpack",
        "truncated",
        "not-a-map",
        "unknown-version",
        "empty-chain",
        "missing-fields",
        "link-out-of-range",
        "bad-frame",
    ],
)
def test_garbage_raises_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError, match="encoded exception"):
        decode_exception(data)


_ARGS = st.one_of(st.text(max_size=20), st.integers())
_EXCEPTIONS = st.one_of(
    st.builds(ValueError, _ARGS),
    st.builds(KeyError, _ARGS),
    st.builds(RuntimeError, _ARGS, _ARGS),
    st.builds(ZeroDivisionError),
    st.builds(
        OSError,
        st.sampled_from([errno.ENOENT, errno.EACCES, errno.EPIPE, errno.EINVAL]),
        st.text(max_size=20),
    ),
    st.builds(OSError, st.just(errno.ENOENT), st.text(max_size=10), st.text(max_size=10)),
)


@st.composite
def exception_graphs(draw: st.DrawFn) -> BaseException:
    """An exception whose cause/context links form any graph, cycles included."""
    members: list[BaseException] = draw(st.lists(_EXCEPTIONS, min_size=1, max_size=6))
    link = st.none() | st.integers(0, len(members) - 1)
    for member in members:
        cause, context = draw(link), draw(link)
        member.__cause__ = None if cause is None else members[cause]
        member.__context__ = None if context is None else members[context]
        member.__suppress_context__ = draw(st.booleans())
    return members[0]


def assert_same_graph(original: BaseException, decoded: BaseException) -> None:
    decoded_of: dict[int, BaseException] = {}
    pending = [(original, decoded)]
    while pending:
        before, after = pending.pop()
        if id(before) in decoded_of:
            assert decoded_of[id(before)] is after
            continue
        decoded_of[id(before)] = after
        assert type(after) is type(before)
        assert after.args == before.args
        assert after.__suppress_context__ == before.__suppress_context__
        if isinstance(before, OSError):
            assert isinstance(after, OSError)
            assert (after.errno, after.filename) == (before.errno, before.filename)
        for link_before, link_after in [
            (before.__cause__, after.__cause__),
            (before.__context__, after.__context__),
        ]:
            assert (link_before is None) == (link_after is None)
            if link_before is not None and link_after is not None:
                pending.append((link_before, link_after))
    assert len({id(after) for after in decoded_of.values()}) == len(decoded_of)


@settings(deadline=None)
@given(exception_graphs())
def test_any_chain_of_builtin_exceptions_round_trips(original: BaseException) -> None:
    assert_same_graph(original, round_trip(original))


_CHILD = """
import sys
from distaff.serialization.exceptions import encode_exception

class ChildError(Exception):
    pass

def fail_in_child():
    raise ChildError("from the child")

try:
    fail_in_child()
except ChildError as exc:
    sys.stdout.write(encode_exception(exc).hex())
"""


def test_exception_from_another_process_round_trips() -> None:
    src = str(Path(_exceptions.__file__).resolve().parents[1])
    paths = [src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}

    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    decoded = decode_exception(bytes.fromhex(child.stdout))

    assert type(decoded).__qualname__ == "ChildError"
    assert decoded.args == ("from the child",)
    text = formatted(decoded)
    assert 'File "<string>"' in text
    assert "in fail_in_child" in text


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def test_exception_group_members_keep_their_tracebacks_and_chains() -> None:
    cause = _raised(KeyError("k"))
    member = _raised(ValueError("v"))
    member.__cause__ = cause
    group = _raised(ExceptionGroup("both", [member, _raised(OSError(2, "gone"))]))

    decoded = decode_exception(encode_exception(group))

    assert isinstance(decoded, ExceptionGroup)
    first, second = decoded.exceptions
    assert isinstance(first, ValueError)
    assert isinstance(first.__cause__, KeyError)
    assert isinstance(second, OSError)
    assert [f.name for f in traceback.extract_tb(first.__traceback__)] == ["_raised"]
    assert [f.name for f in traceback.extract_tb(second.__traceback__)] == ["_raised"]


def test_origin_adds_a_marker_frame_and_no_column_carets() -> None:
    error = _raised(ValueError("v"))

    decoded = decode_exception(encode_exception(error), origin="10.0.0.5:7400")

    text = "".join(traceback.format_exception(decoded))
    frames = traceback.extract_tb(decoded.__traceback__)
    assert frames[0].filename == "<distaff worker 10.0.0.5:7400>"
    assert frames[1].name == "_raised"
    assert "raise error" in text
    assert "^" not in text


def test_distaff_frames_are_dropped_unless_the_switch_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distaff.serialization import tracebacks

    def raise_in_distaff() -> BaseException:
        code = compile("raise ValueError('inside')", tracebacks.PACKAGE_DIR + "fake.py", "exec")
        try:
            exec(code)
        except ValueError as caught:
            return caught
        raise AssertionError("unreachable")

    encoded = encode_exception(raise_in_distaff())

    shown = traceback.extract_tb(decode_exception(encoded).__traceback__)
    monkeypatch.setenv("DISTAFF_TRACEBACK_INTERNALS", "1")
    kept = traceback.extract_tb(decode_exception(encoded).__traceback__)
    assert [f.name for f in shown] == ["raise_in_distaff"]
    assert [f.name for f in kept] == ["raise_in_distaff", "<module>"]
