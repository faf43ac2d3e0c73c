"""What Linux's ``/proc`` says about a process on this host."""

from __future__ import annotations


def process_state(pid: int) -> tuple[bytes, int]:
    """``pid``'s state letter and start time in clock ticks since boot (``b""``, 0: unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return b"", 0
