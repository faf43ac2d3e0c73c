"""Argument checks for public constructors: fail at once, naming the argument.

``TypeError`` for a value of the wrong kind (``spawn="2"``), ``ValueError`` for
one out of range (``grace=-3``). ``bool`` is not accepted where a number is
meant, and NaN never is.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import overload


def _kind(value: object) -> str:
    return type(value).__name__


@overload
def integer(name: str, value: int, *, minimum: int) -> int: ...
@overload
def integer(name: str, value: int | None, *, minimum: int) -> int | None: ...
def integer(name: str, value: int | None, *, minimum: int) -> int | None:
    """Return ``value`` if it is None or an int >= ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {_kind(value)} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return value


@overload
def seconds(name: str, value: float, *, positive: bool = ...) -> float: ...
@overload
def seconds(name: str, value: float | None, *, positive: bool = ...) -> float | None: ...
def seconds(name: str, value: float | None, *, positive: bool = False) -> float | None:
    """Return ``value`` as a float if it is None or a number >= 0 (> 0 if ``positive``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {_kind(value)} {value!r}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound} seconds, not {value!r}")
    return float(value)


def flag(name: str, value: bool) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {_kind(value)} {value!r}")
    return value


def tags(values: tuple[str, ...]) -> frozenset[str]:
    """Return the tags as a set if each is a non-empty string."""
    for tag in values:
        if not isinstance(tag, str):
            raise TypeError(f"a tag must be a str, not {_kind(tag)} {tag!r}")
        if not tag.strip():
            raise ValueError(f"a tag must be a non-empty string, not {tag!r}")
    return frozenset(values)


# argparse ``type=`` converters: a bad value becomes a usage error (exit 2)
# that names the option, never a traceback.


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {port}")
    return port


def non_negative_seconds(text: str) -> float:
    """A number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, not {text}")
    return value


def non_empty(text: str) -> str:
    """A string with something in it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def existing_file(text: str) -> str:
    """The path of a file that exists and can be read."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text!r}")
    return text


def existing_directory(text: str) -> str:
    """The absolute path of a directory that exists."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    return os.path.abspath(text)
