"""The mypy plugin shows mypy the ``spawn`` that ``@distaff.actor`` adds at run time."""

from __future__ import annotations

import pathlib

import pytest

mypy_api = pytest.importorskip("mypy.api")
pytestmark = pytest.mark.slow  # each runs mypy cold: several seconds

SAMPLE = """
from __future__ import annotations
import distaff

@distaff.actor
class Cache:
    def __init__(self, size: int) -> None:
        self.size = size

@distaff.actor(concurrency=2)
class Pair:
    async def get(self) -> int:
        return 1

async def main() -> None:
    cache = await Cache.spawn(1024, name="c")
    reveal_type(cache)
    reveal_type(await Pair.spawn())
    reveal_type(Cache(3))
    await Cache.spawn(1, name=3)
"""


def check(tmp_path: pathlib.Path, plugins: str) -> str:
    (tmp_path / "sample.py").write_text(SAMPLE)
    (tmp_path / "mypy.ini").write_text(f"[mypy]\nstrict = True\n{plugins}")
    out, err, _ = mypy_api.run(
        [
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(tmp_path / "sample.py"),
        ]
    )
    assert err == ""
    return out


def test_with_the_plugin_spawn_returns_a_typed_handle(tmp_path: pathlib.Path) -> None:
    out = check(tmp_path, "plugins = distaff.mypy\n")

    assert 'Revealed type is "distaff.runtime.actors.ActorHandle[sample.Cache]"' in out
    assert 'Revealed type is "distaff.runtime.actors.ActorHandle[sample.Pair]"' in out
    assert 'Revealed type is "sample.Cache"' in out  # the class stays a class
    assert 'Argument "name" to "spawn" of "Cache" has incompatible type "int"' in out
    assert "Found 1 error" in out


def test_without_the_plugin_mypy_cannot_see_spawn(tmp_path: pathlib.Path) -> None:
    out = check(tmp_path, "")

    assert '"type[Cache]" has no attribute "spawn"' in out
