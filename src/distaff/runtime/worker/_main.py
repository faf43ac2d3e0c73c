"""Entry point of a spawned worker process (``python -m ...worker._main FD``).

The parent writes one JSON line (``sys.path``) and then a length-prefixed
pickled :class:`WorkerConfig` to our stdin, and keeps stdin open for as long
as it wants us alive: end-of-file on stdin means the parent is gone, and we
stop. We report readiness on the file descriptor named in ``argv[1]``:
``OK`` + msgpack metadata, or ``ER`` + the formatted startup error.
"""

from __future__ import annotations

import asyncio
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
    from .server import Worker, WorkerConfig, install_signal_handlers

    assert isinstance(config, WorkerConfig)
    raise_open_files_limit()
    worker = Worker(config)
    install_signal_handlers(worker)
    loop = asyncio.get_running_loop()

    def on_stdin() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            worker.stop()

    loop.add_reader(0, on_stdin)

    def ready(metadata: object) -> None:
        os.write(ready_fd, b"OK" + encode_metadata(metadata))  # type: ignore[arg-type]
        os.close(ready_fd)

    await worker.run(ready)


def run(ready_fd: int) -> int:
    """Read the config from stdin, serve until stopped; return the exit status."""
    try:
        config = _read_config()
        from . import loops

        loops.run(_serve(config, ready_fd), getattr(config, "event_loop", "auto"))
    except BaseException:
        message = traceback.format_exc().encode()
        try:
            os.write(ready_fd, b"ER" + message)
        except OSError:  # already reported ready: the failure came later
            sys.stderr.write(message.decode())
        return 1
    return 0


def main() -> None:
    sys.exit(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
