"""Remote tracebacks, formatted from real failures of routines defined in __main__."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    import distaff


    def helper(x):
        return 1 / x


    @distaff.routine
    async def work(x):
        return helper(x)


    def raise_value():
        raise ValueError("first")


    def raise_key():
        raise KeyError("second")


    @distaff.routine
    async def several():
        errors = []
        for fail in (raise_value, raise_key):
            try:
                fail()
            except Exception as exc:
                errors.append(exc)
        raise ExceptionGroup("several", errors)


    async def main():
        async with distaff.WorkerPool(spawn=1):
            if sys.argv[1] == "work":
                await work(0)
            else:
                await several()


    asyncio.run(main())
    """
)


def run(tmp_path: pathlib.Path, which: str, **env: str) -> tuple[str, list[str]]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), which],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    assert done.returncode == 1
    return str(script), done.stderr.splitlines()


def line_of(source: str) -> int:
    return SCRIPT.splitlines().index(source) + 1


def test_main_routine_frames_keep_file_line_and_source_after_a_worker_marker(
    tmp_path: pathlib.Path,
) -> None:
    script, lines = run(tmp_path, "work")

    call = lines.index(f'  File "{script}", line {line_of("            await work(0)")}, in main')
    marker = call + 2
    assert re.fullmatch(r'  File "<distaff worker 127\.0\.0\.1:\d+>", line 1, in .*', lines[marker])
    assert lines[marker + 1 : marker + 6] == [
        f'  File "{script}", line {line_of("    return helper(x)")}, in work',
        "    return helper(x)",
        f'  File "{script}", line {line_of("    return 1 / x")}, in helper',
        "    return 1 / x",
        "ZeroDivisionError: division by zero",
    ]


def test_distaff_frames_are_left_out_unless_asked_for(tmp_path: pathlib.Path) -> None:
    _, plain = run(tmp_path, "work")
    _, internals = run(tmp_path, "work", DISTAFF_TRACEBACK_INTERNALS="1")

    assert not any("distaff/" in line for line in plain if line.startswith("  File"))
    assert any("runtime/worker/service.py" in line for line in internals)
    assert any("runtime/routine.py" in line for line in internals)
    assert not any(set(line.strip()) <= {"^", "~"} and line.strip() for line in plain[-8:])


@pytest.mark.parametrize(
    ("function", "source"),
    [
        ("raise_value", '    raise ValueError("first")'),
        ("raise_key", '    raise KeyError("second")'),
    ],
)
def test_exception_group_members_keep_their_own_tracebacks(
    tmp_path: pathlib.Path, function: str, source: str
) -> None:
    script, lines = run(tmp_path, "group")

    frame = f'    |   File "{script}", line {line_of(source)}, in {function}'
    assert frame in lines
    assert lines[lines.index(frame) + 1] == f"    | {source}"
