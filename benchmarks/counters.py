"""CPU instructions and cycles retired by this thread, from Linux's ``perf_event_open``.

Wall time on a shared machine drifts by ±20 % over seconds; the instruction count of the same work does
not (the same Python and kernels run the same instructions), so a ratio of instructions is a repeatable
view of overhead next to the timed one. Cycles count only while the thread runs, so time stolen by
other machines' jobs is left out, but cache misses caused by them are not.

Only user-space events of the calling thread are counted (torch's CPU kernels run in it with one
thread). Where the system refuses the events (another OS, ``perf_event_paranoid``, a virtual machine
without a PMU), :func:`open_counters` returns ``None`` and callers leave the columns out.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass

_SYSCALL_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
_PERF_TYPE_HARDWARE = 0
_CYCLES, _INSTRUCTIONS = 0, 1
_EXCLUDE_KERNEL, _EXCLUDE_HV = 1 << 5, 1 << 6
_TIME_ENABLED, _TIME_RUNNING = 1 << 0, 1 << 1  # read_format: how long the event was on, and counting


class _Attr(ctypes.Structure):  # struct perf_event_attr, the leading fields (PERF_ATTR_SIZE_VER0 = 64 bytes)
    _fields_ = [
        ("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32), ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class Reading:
    instructions: int
    cycles: int

    def __sub__(self, other: Reading) -> Reading:
        return Reading(self.instructions - other.instructions, self.cycles - other.cycles)


class Counters:
    """Open instruction and cycle counters of the calling thread; :meth:`read` returns both."""

    def __init__(self, instructions_fd: int, cycles_fd: int) -> None:
        self._fds = (instructions_fd, cycles_fd)

    def read(self) -> Reading:
        """Counts so far. When the kernel shares the hardware counters among more events than it has
        (multiplexing), an event counts only part of the time; its count is scaled by the time it was
        enabled over the time it counted, as ``perf stat`` does."""
        counts = []
        for fd in self._fds:
            value, enabled, running = struct.unpack("qqq", os.read(fd, 24))
            counts.append(value if running in (0, enabled) else round(value * enabled / running))
        return Reading(*counts)


def _open(config: int) -> int:
    number = _SYSCALL_PERF_EVENT_OPEN.get(platform.machine())
    if number is None or platform.system() != "Linux":
        return -1
    attr = _Attr(type=_PERF_TYPE_HARDWARE, size=ctypes.sizeof(_Attr), config=config,
                 read_format=_TIME_ENABLED | _TIME_RUNNING, flags=_EXCLUDE_KERNEL | _EXCLUDE_HV)
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(number, ctypes.byref(attr), 0, -1, -1, 0)  # this thread, any CPU, no group, no flags


def open_counters() -> Counters | None:
    """Counters for this thread, or ``None`` where the system does not give them."""
    try:
        fds = (_open(_INSTRUCTIONS), _open(_CYCLES))
    except (OSError, AttributeError):
        return None
    if min(fds) < 0:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        return None
    counters = Counters(*fds)
    first = counters.read()
    return counters if first.instructions > 0 or counters.read().instructions > first.instructions else None
