"""Workers on uvloop or on asyncio's loop: the same calls, the same clean exits."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys

import pytest

import distaff
from distaff.runtime.worker import loops
from distaff.runtime.worker.loops import YOUNG_GENERATION

from . import fault_routines as fr
from . import routines as r
from .durable import ROOT, durable_workers, start_worker

pytest.importorskip("uvloop")  # the test extra installs it

LOOP_MODULE = {"asyncio": "asyncio", "uvloop": "uvloop"}


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_calls_streams_errors_and_cancellation_on_either_loop(
    event_loop: str, tmp_path: pathlib.Path
) -> None:
    async with distaff.WorkerPool(spawn=1, event_loop=event_loop):
        assert await r.loop_module() == LOOP_MODULE[event_loop]
        # a worker's collector looks at its youngest objects less often
        assert (await r.gc_threshold())[0] == YOUNG_GENERATION
        assert await r.echo({"x": [1, 2]}) == {"x": [1, 2]}

        stream = r.echo_sent()
        assert await stream.asend(None) is None
        assert await stream.asend(b"y" * 100_000) == b"y" * 100_000
        await stream.aclose()

        with pytest.raises(r.StockError, match="3 x bolts missing") as caught:
            await r.fail("bolts")
        assert any(entry.name == "_fail" for entry in caught.traceback)  # the worker's frame

        marker = tmp_path / "blocked"
        call = asyncio.ensure_future(fr.block(str(marker), 30.0))
        await fr.wait_until(lambda: pathlib.Path(f"{marker}.started").exists() or call.done())
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await fr.wait_until(marker.exists)  # the routine's finally ran on the worker


async def test_auto_takes_uvloop_when_it_is_installed() -> None:
    async with distaff.WorkerPool(spawn=1, event_loop="auto"):
        assert await r.loop_module() == "uvloop"


async def test_a_missing_uvloop_is_named_when_a_pool_asks_for_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real import failure on the worker: a uvloop module that cannot be imported
    # shadows the installed one on the path the workers start with
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(distaff.WorkerStartError, match=r"pip install 'distaff\[uvloop\]'"):
        async with distaff.WorkerPool(spawn=1, event_loop="uvloop", restart=False):
            pass

    async with distaff.WorkerPool(spawn=1, event_loop="auto"):  # auto falls back
        assert await r.loop_module() == "asyncio"


def test_a_pool_refuses_an_unknown_event_loop() -> None:
    with pytest.raises(
        ValueError, match=r"event_loop must be one of auto, asyncio, uvloop, not 'trio'"
    ):
        distaff.WorkerPool(spawn=1, event_loop="trio")
    with pytest.raises(TypeError, match="event_loop must be one of"):
        distaff.WorkerPool(spawn=1, event_loop=1)  # type: ignore[arg-type]


def test_the_environment_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loops.ENVIRONMENT, "asyncio")
    assert distaff.WorkerPool(spawn=1).event_loop == "asyncio"
    monkeypatch.delenv(loops.ENVIRONMENT)
    assert distaff.WorkerPool(spawn=1).event_loop == "auto"
    monkeypatch.setenv(loops.ENVIRONMENT, "trio")
    with pytest.raises(ValueError, match=r"DISTAFF_WORKER_LOOP must be one of .*not 'trio'"):
        distaff.WorkerPool(spawn=1)


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_a_durable_worker_on_either_loop_serves_and_exits_0_on_sigterm(
    event_loop: str,
) -> None:
    async with durable_workers() as started:
        worker = await start_worker("--discovery", "none", "--event-loop", event_loop)
        started.append(worker)
        async with distaff.WorkerPool(discovery=f"static://{worker.address}", spawn=0):
            assert await r.loop_module() == LOOP_MODULE[event_loop]
        worker.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await worker.process.wait() == 0


async def test_a_durable_worker_asked_for_a_missing_uvloop_exits_2_naming_it(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "distaff",
        "worker",
        "--discovery",
        "none",
        "--event-loop",
        "uvloop",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 2, (out, err)
    assert b"serving on" not in out
    assert b"install it with: pip install 'distaff[uvloop]'" in err


def test_distaff_worker_refuses_an_unknown_loop_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from distaff.cli import main

    monkeypatch.setenv(loops.ENVIRONMENT, "trio")
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--discovery", "none"])
    assert exited.value.code == 2
    assert "DISTAFF_WORKER_LOOP must be one of auto, asyncio, uvloop, not 'trio'" in (
        capsys.readouterr().err
    )
