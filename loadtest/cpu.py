"""Where a benchmark's CPU time goes: per kind of process, read from /proc (Linux only).

    meter = CpuMeter({"proxy": "semcache.proxy", "redis": "redis-server"})
    before = meter.sample()
    ... run the load ...
    used = meter.since(before)   # {"proxy": 3.2, "redis": 0.4, "other": 1.1, ...} CPU seconds

Processes are classified by their command line (the first kind whose marker it contains;
the rest go to "other"), so load-generating children spawned mid-run are counted too. CPU
time of a process that exits between two samples is lost; keep processes alive across a
measurement. The total busy time of the machine (all processes, from /proc/stat) comes as
"machine_busy" and the wall time as "wall_s", so utilisation is busy / (wall x cores).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_s() -> float:
    """CPU seconds the whole machine spent outside idle and iowait since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


class CpuMeter:
    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds

    def _kind(self, pid: str) -> str:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
        return next((k for k, marker in self.kinds.items() if marker in cmd), "other")

    def sample(self) -> dict[str, float]:
        """CPU seconds used so far by every live process, keyed "pid:kind"."""
        out: dict[str, float] = {}
        if not Path("/proc/stat").exists():
            return out
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command name: utime is the 14th, stime the 15th.
            rest = stat.rsplit(")", 1)[1].split()
            kind = self._kind(pid)
            if kind:
                out[f"{pid}:{kind}"] = (int(rest[11]) + int(rest[12])) / _TICK
        out["machine_busy"] = _busy_s()
        out["wall_s"] = time.monotonic()
        return out

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds per kind between `before` and now (plus machine_busy and wall_s)."""
        now = self.sample()
        used: dict[str, float] = {}
        for key, value in now.items():
            if key in ("machine_busy", "wall_s"):
                used[key] = value - before.get(key, value)
                continue
            kind = key.split(":", 1)[1]
            used[kind] = used.get(kind, 0.0) + value - before.get(key, 0.0)
        return {k: round(v, 3) for k, v in used.items()}
