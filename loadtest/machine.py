"""What machine a benchmark ran on, recorded in every results file so numbers are comparable."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

LIBRARIES = ("aiohttp", "redis", "hiredis", "orjson", "numpy", "multidict", "yarl")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def redis_server_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else None


def machine_info(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in libraries:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "gpu": gpu_name(),
        "libraries": versions,
    }


def machine_slug(info: dict[str, Any]) -> str:
    """A short file-name-safe name: the GPU's if there is one, else `cpu-<n>core`."""
    if info.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", str(info["gpu"]).splitlines()[0].lower()).strip("-")
    return f"cpu-{info['cpu_count']}core"
