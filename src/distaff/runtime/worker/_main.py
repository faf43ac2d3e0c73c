"""Entry point of a spawned worker process (``python -m ...worker._main FD``).

The parent writes one JSON line (``sys.path``) and then a length-prefixed
pickled :class:`WorkerConfig` to our stdin, and keeps stdin open for as long
as it wants us alive: end-of-file on stdin means the parent is gone, and we
stop. We report readiness on the file descriptor named in ``argv[1]``:
``OK`` + the length (4 bytes) + msgpack metadata, or ``ER`` + the formatted
startup error. After ``OK`` the descriptor stays open: when the parent stops
the whole pool it writes ``L`` on our stdin, we drain, write ``D`` there, and
exit at once when stdin ends (``Worker.leave_together``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import struct
import sys
import traceback


def _read_config() -> object:
    header = sys.stdin.buffer.readline()
    sys.path[:] = json.loads(header)["sys_path"]
    (size,) = struct.unpack("!Q", sys.stdin.buffer.read(8))
    return pickle.loads(sys.stdin.buffer.read(size))


async def _serve(config: object, ready_fd: int) -> None:
    from ...serialization.metadata import encode_metadata
    from .._limits import raise_open_files_limit
    from .process import DRAINED, LEAVE
    from .server import Worker, WorkerConfig, install_signal_handlers

    assert isinstance(config, WorkerConfig)
    raise_open_files_limit()
    worker = Worker(config)
    install_signal_handlers(worker)
    loop = asyncio.get_running_loop()

    def on_stdin() -> None:
        data = os.read(0, 4096)
        if data:  # the parent's word: the whole pool stops
            if LEAVE in data:
                worker.leave_together()
            return
        loop.remove_reader(0)
        worker.go()  # the parent is gone, or says go

    loop.add_reader(0, on_stdin)

    def ready(metadata: object) -> None:
        encoded = encode_metadata(metadata)  # type: ignore[arg-type]
        os.write(ready_fd, b"OK" + struct.pack("!I", len(encoded)) + encoded)
        reported.append(True)

    def drained() -> None:
        with contextlib.suppress(OSError):  # the parent is gone: stdin ends too
            os.write(ready_fd, DRAINED)

    await worker.run(ready, drained)


# whether readiness was reported (a later failure goes to stderr)
reported: list[bool] = []


def run(ready_fd: int) -> int:
    """Read the config from stdin, serve until stopped; return the exit status."""
    try:
        config = _read_config()
        from . import loops

        loops.run(_serve(config, ready_fd), getattr(config, "event_loop", "auto"))
    except BaseException:
        message = traceback.format_exc()
        if reported:  # the failure came later
            sys.stderr.write(message)
        else:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"ER" + message.encode())
        return 1
    return 0


def main() -> None:
    sys.exit(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
