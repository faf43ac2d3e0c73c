"""Which workers' Unix sockets a caller will use: only a worker's own kind, on this host."""

from __future__ import annotations

import socket

import pytest

import distaff
from distaff.proxy.ipc import IPC_OPTION, ipc_name

HERE = socket.gethostname()


def worker(name: str, **fields: object) -> distaff.WorkerMetadata:
    values: dict[str, object] = {"uid": "w", "address": "127.0.0.1:1", "host": HERE}
    values.update(fields)
    return distaff.WorkerMetadata(options={IPC_OPTION: name}, **values)  # type: ignore[arg-type]


def test_a_same_host_plaintext_worker_s_socket_is_used() -> None:
    assert ipc_name(worker("@distaff-abc")) == "@distaff-abc"


@pytest.mark.parametrize(
    "metadata",
    [
        worker("@distaff-abc", host="another-host"),
        worker("@distaff-abc", secure=True),
        worker("/var/run/docker.sock"),  # discovery must not aim a caller at any socket
        worker("@other-service"),
        worker("@distaff-a\0b"),
        distaff.WorkerMetadata(uid="w", address="127.0.0.1:1", host=HERE),
    ],
)
def test_anything_else_goes_over_grpc(metadata: distaff.WorkerMetadata) -> None:
    assert ipc_name(metadata) is None


def test_distaff_ipc_0_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTAFF_IPC", "0")
    assert ipc_name(worker("@distaff-abc")) is None
