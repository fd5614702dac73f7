"""What else the machine was doing during a benchmark, shared by the benchmark scripts."""

from __future__ import annotations

import os


def busy_cpu_seconds():
    """CPU seconds every process on the machine has spent busy since boot; None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait.
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU seconds of this process, all of its threads included."""
    t = os.times()
    return t.user + t.system
