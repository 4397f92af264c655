"""CPU time and memory of a process tree, read from /proc (Linux only).

CPU: for every live process of the tree, the kernel's per-process CPU clock
(``clock_gettime`` on the pid's CPU clock id: user + system, all threads,
nanosecond resolution), plus ``cutime + cstime`` from ``/proc/PID/stat`` for
children that were already reaped.  ``utime + stime`` ticks are summed too, as
a cross-check.  This is the same definition as ../shared/bench/procstat.py.

Memory: ``VmRSS`` from ``/proc/PID/status`` and ``Pss`` from
``/proc/PID/smaps_rollup``, summed over the tree (user-space memory only;
kernel socket buffers are not counted).

The parsing helpers take text so that tests need no live process.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(stat: bytes) -> list[bytes]:
    """Fields of /proc/PID/stat after ``comm``: [0] is state, [1] ppid, [11] utime...

    ``comm`` may hold spaces and parentheses, so split after the last ')'.
    """
    return stat[stat.rindex(b")") + 2 :].split()


@dataclass(frozen=True, slots=True)
class StatTimes:
    ppid: int
    state: bytes
    utime: int  # clock ticks
    stime: int
    cutime: int
    cstime: int


def parse_stat(stat: bytes) -> StatTimes:
    f = stat_fields(stat)
    return StatTimes(int(f[1]), f[0], int(f[11]), int(f[12]), int(f[13]), int(f[14]))


def kb_field(text: bytes, key: bytes) -> int:
    """Bytes of a ``Key:   123 kB`` line of /proc/PID/status or smaps_rollup; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def tree_from_parents(root: int, parents: Mapping[int, int]) -> list[int]:
    """root and its descendants (breadth first) given a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in sorted(parents.items()):
        children.setdefault(ppid, []).append(pid)
    out = [root]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], ()))
        i += 1
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parents[int(name)] = parse_stat(_read(f"/proc/{name}/stat")).ppid
            except (OSError, ValueError, IndexError):
                continue
    return tree_from_parents(root, parents)


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        return parse_stat(_read(f"/proc/{pid}/stat")).state != b"Z"
    except (OSError, ValueError, IndexError):
        return False


def cpu_clock_id(pid: int) -> int:
    """Linux CPU clock id of a whole process: ((~pid) << 3) | CPUCLOCK_SCHED."""
    return ((~pid) << 3) | 2


@dataclass(frozen=True, slots=True)
class CpuSample:
    cpu_s: float  # CPU clocks of the live processes + reaped children
    ticks_s: float  # utime+stime+cutime+cstime, clock-tick resolution
    pids: tuple[int, ...]


def cpu_sample(root: int) -> CpuSample:
    cpu = 0.0
    ticks = 0
    pids = []
    for pid in process_tree(root):
        try:
            st = parse_stat(_read(f"/proc/{pid}/stat"))
        except (OSError, ValueError, IndexError):
            continue
        own = st.utime + st.stime
        reaped = st.cutime + st.cstime
        try:
            c = time.clock_gettime(cpu_clock_id(pid))
        except OSError:
            c = own / CLK_TCK
        cpu += c + reaped / CLK_TCK
        ticks += own + reaped
        pids.append(pid)
    return CpuSample(cpu, ticks / CLK_TCK, tuple(pids))


def cpu_of(pids: Iterable[int]) -> float:
    """Sum of the CPU clocks of these processes (no tree walk): aux utilisation."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += time.clock_gettime(cpu_clock_id(pid))
    return total


@dataclass(frozen=True, slots=True)
class MemSample:
    rss: int  # bytes, summed over the tree
    pss: int
    nproc: int


def mem_sample(root: int) -> MemSample:
    rss = pss = 0
    pids = process_tree(root)
    for pid in pids:
        try:
            rss += kb_field(_read(f"/proc/{pid}/status"), b"VmRSS:")
            pss += kb_field(_read(f"/proc/{pid}/smaps_rollup"), b"Pss:")
        except OSError:
            pass
    return MemSample(rss, pss, len(pids))


def fd_count(root: int) -> int:
    n = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{pid}/fd"))
    return n
