"""What a new user waits for: `make test` and `make serve` on a fresh clone, timed, and the
virtual environment's size after each.

    python -m semcache.loadtest.bench_setup [--repo .] [--out loadtest/results/setup_cpu-2core.json]

Clones the repository's committed HEAD into a temporary folder, runs `make test` there (the
default suite included), then `make serve` until `/readyz` answers and a question is served
twice (a miss, then an exact hit), and records wall times, the outcome of each step and the
.venv's size after each; then, in a second fresh clone, `make serve` alone (what a user who
only wants the proxy and its bundled model waits for). pip gets an empty cache of its own,
so downloads are counted; pip's find-links and index settings are the machine's (on our
machines a local mirror and a local torch wheel, which make installs faster than on a machine
that downloads from PyPI: the results file says which settings were in force). System
packages (redis-server, chromium, prometheus) are what the machine has: `make` installs the
missing ones, and the file records which were present before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .machine import machine_info, machine_slug

SYSTEM_TOOLS = ("redis-server", "chromium", "promtool")


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def largest(site: Path, n: int = 8) -> list[tuple[str, int]]:
    sizes = [(p.name, du_bytes(p)) for p in site.iterdir() if p.is_dir()]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, int]:
    start = time.monotonic()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    return time.monotonic() - start, rc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(clone: Path, env: dict[str, str], log: Path, timeout_s: float) -> dict[str, Any]:
    """`make serve` until ready, then a miss and an exact hit through it."""
    port = free_port()
    start = time.monotonic()
    with log.open("w") as fh:  # includes scripts/prepare: whatever the target still installs
        proc = subprocess.Popen(["make", "serve", f"ARGS=--port {port}"], cwd=clone, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    result: dict[str, Any] = {"port": port}
    try:
        while time.monotonic() - start < timeout_s:
            if proc.poll() is not None:
                result["exited"] = proc.returncode
                return result
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            result["timed_out"] = True
            return result
        result["ready_s"] = round(time.monotonic() - start, 1)
        outcomes = []
        body = json.dumps({"model": "any", "max_tokens": 16,
                           "messages": [{"role": "user", "content": "What is a semantic cache?"}]})
        for _ in range(2):
            t0 = time.monotonic()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions", data=body.encode(),
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"})
            with urllib.request.urlopen(request, timeout=300) as resp:
                outcomes.append({"x_semcache": resp.headers["X-Semcache"],
                                 "seconds": round(time.monotonic() - t0, 3)})
            time.sleep(1.0)  # the write-back is off the response path
        result["requests"] = outcomes
        return result
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def serve_step(clone: Path, env: dict[str, str], log: Path, args: argparse.Namespace) -> dict[str, Any]:
    result = serve(clone, env, log, args.serve_timeout)
    site = next((clone / ".venv" / "lib").glob("python*")) / "site-packages"
    result["venv_bytes"] = du_bytes(clone / ".venv")
    result["largest_packages"] = largest(site)
    lines = log.read_text().splitlines()
    result["log_lines"] = len(lines)
    result["quantisation_info_lines"] = sum(
        any(w in line for w in ("fusion_base", "onnx_model", "Quantization parameters")) for line in lines)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    info = machine_info()
    out = args.out or args.repo / "loadtest" / "results" / f"setup_{machine_slug(info)}.json"
    work = Path(tempfile.mkdtemp(prefix="semcache-fresh-"))
    clone = work / "semcache"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    pip_config = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True,
                                text=True).stdout.strip().splitlines()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["PIP_CACHE_DIR"] = str(work / "pip-cache")  # empty: every wheel is fetched again
    results: dict[str, Any] = {
        "benchmark": "bench_setup", "commit": head, "machine": info,
        "system_tools_present_before": {t: shutil.which(t) is not None for t in SYSTEM_TOOLS},
        "pip_config": pip_config,
        "note": ("pip's cache was empty; its index and find-links settings are the machine's "
                 "(see pip_config): a local mirror and a local CPU torch wheel make installs "
                 "faster than downloads from PyPI would be"),
    }
    results["load_average_before"] = os.getloadavg()
    seconds, rc = timed(["make", "test", "PYTEST_ARGS=-q -p no:cacheprovider"], clone, env,
                        work / "make_test.log")
    site = next((clone / ".venv" / "lib").glob("python*")) / "site-packages"
    results["make_test"] = {"seconds": round(seconds, 1), "returncode": rc,
                            "summary": (work / "make_test.log").read_text().strip().splitlines()[-1],
                            "venv_bytes": du_bytes(clone / ".venv"),
                            "largest_packages": largest(site)}
    results["make_serve_after_make_test"] = serve_step(clone, env, work / "make_serve.log", args)
    alone = work / "serve-only"
    subprocess.run(["git", "clone", "-q", str(args.repo), str(alone)], check=True)
    results["make_serve_on_a_fresh_clone"] = serve_step(alone, env, work / "make_serve_alone.log", args)
    results["load_average_after"] = os.getloadavg()  # other work on the machine meanwhile
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k.startswith("make_")}, indent=2))
    print(f"logs in {work}; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
