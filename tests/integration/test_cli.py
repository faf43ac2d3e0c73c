"""The ``distaff`` command: bad options are usage errors; routines import from where it runs."""

from __future__ import annotations

import asyncio
import pathlib
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from types import ModuleType

import pytest

import distaff

from .durable import ROOT, durable_workers, start_worker

# (options after "distaff worker", a pattern the usage error must contain)
BAD_OPTIONS = [
    (["--port", "99999"], r"argument --port: a port is 0\.\.65535, not 99999"),
    (["--port", "-5"], r"argument --port: a port is 0\.\.65535, not -5"),
    (["--port", "http"], r"argument --port: not a port number: 'http'"),
    (["--grace", "-1"], r"argument --grace: must be >= 0 seconds"),
    (["--grace", "nan"], r"argument --grace: must be >= 0 seconds"),
    (["--tag", ""], r"argument --tag: must not be empty"),
    (["--namespace", ""], r"argument --namespace: invalid discovery namespace ''"),
    (["--namespace", "a/b"], r"argument --namespace: invalid discovery namespace 'a/b'"),
    (["--host", "not-a-host.invalid", "--insecure"], r"argument --host: 'not-a-host\.invalid'"),
    (["--cert", "/nonexistent/w.pem"], r"argument --cert: no such file: '/nonexistent/w\.pem'"),
    (["--key", "/nonexistent/w.key"], r"argument --key: no such file"),
    (["--ca", "/nonexistent/ca.pem"], r"argument --ca: no such file"),
    (["--ca", "/etc/hostname", "--cert", "/etc/hostname", "--key", "/etc/hostname"], r"no PEM"),
    (["--cert", "/etc/hostname"], r"TLS needs all three"),
    (["--mutual"], r"--mutual and --token-file need --ca"),
    (["--path", "/nonexistent/dir"], r"argument --path: no such directory"),
    (["--discovery", "dns"], r"argument --discovery: invalid choice"),
]


def distaff_command(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distaff", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("options", "message"), BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS]
)
def test_a_bad_worker_option_is_a_usage_error_naming_it(options: list[str], message: str) -> None:
    result = distaff_command("worker", "--discovery", "none", *options)

    assert result.returncode == 2, result.stderr
    assert "usage: distaff worker" in result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert result.stdout == ""


def test_an_address_this_host_does_not_have_is_refused_without_a_traceback() -> None:
    result = distaff_command("worker", "--discovery", "none", "--host", "192.0.2.1", "--insecure")

    assert result.returncode == 2
    assert "could not bind 192.0.2.1:0" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_is_printed_by_both_entry_points() -> None:
    script = pathlib.Path(sys.executable).with_name("distaff")

    by_module = distaff_command("--version")
    by_script = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)

    assert by_module.stdout == by_script.stdout == f"distaff {distaff.__version__}\n"
    assert by_module.returncode == by_script.returncode == 0


@pytest.fixture
def jobs_module(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, ModuleType]]:
    """A module of routines in a directory that is not on any worker's sys.path yet."""
    name = f"jobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import os
            import distaff

            @distaff.routine
            async def where() -> str:
                return os.getcwd()
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
        yield tmp_path, module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


async def test_the_console_script_worker_imports_routines_from_its_working_directory(
    jobs_module: tuple[pathlib.Path, ModuleType],
) -> None:
    directory, jobs = jobs_module
    ns = f"test-{uuid.uuid4().hex[:12]}"
    script = pathlib.Path(sys.executable).with_name("distaff")
    async with durable_workers() as workers:
        workers.append(
            await start_worker(
                "--discovery", "local", "--namespace", ns, command=[str(script)], cwd=directory
            )
        )
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)):
            assert await jobs.where() == str(directory)


async def test_a_worker_imports_routines_from_each_path_option(
    jobs_module: tuple[pathlib.Path, ModuleType],
) -> None:
    directory, jobs = jobs_module
    ns = f"test-{uuid.uuid4().hex[:12]}"
    async with durable_workers() as workers:
        workers.append(
            await start_worker(
                "--discovery", "local", "--namespace", ns, "--path", "/", "--path", str(directory)
            )
        )
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)):
            assert await jobs.where() == str(ROOT)


async def test_spawned_workers_see_sys_path_as_it_was_when_the_pool_started(
    jobs_module: tuple[pathlib.Path, ModuleType],
) -> None:
    _, jobs = jobs_module  # its directory went on sys.path before the pool starts

    async with distaff.WorkerPool(spawn=1):
        assert await asyncio.wait_for(jobs.where(), 30) == str(pathlib.Path.cwd())
