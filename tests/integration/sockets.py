"""The connections a process holds, read from its /proc entries."""

from __future__ import annotations

import os


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def established(pid: int) -> int:
    """How many established TCP connections ``pid`` holds."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                count += fields[3] == "01" and fields[9] in inodes  # 01: ESTABLISHED
    return count


def accepted_ipc(pid: int) -> int:
    """How many sessions ``pid`` (a worker) accepted on its Unix socket and still holds."""
    inodes = _socket_inodes(pid)
    count = 0
    with open(f"/proc/{pid}/net/unix") as table:
        for line in table.readlines()[1:]:
            # Num RefCount Protocol Flags Type St Inode [Path]; St 03: connected
            fields = line.split()
            if len(fields) > 7 and fields[5] == "03" and fields[6] in inodes:
                count += fields[7].startswith("@distaff-")
    return count
