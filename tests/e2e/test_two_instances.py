"""Two `semcache serve` with the bundled backend on one host: each starts its own backend on a
port of its own (a fixed port made the second one crash), and they share one cache."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PREPARED = ROOT / ".data"  # scripts/prepare's data dir: the backend's weights, the encoder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="the bundled backend needs semcache[backend] (make test-all)"),
    pytest.mark.skipif(not (PREPARED / "backend" / "SmolLM2-135M-Instruct").is_dir(),
                       reason="the backend's weights are not prepared (make test-all runs prepare)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def borrowing_data_dir(data_dir: Path) -> Path:
    """A data dir of its own for each instance (its Redis-free files), with the prepared models."""
    data_dir.mkdir()
    for name in ("backend", "models"):
        (data_dir / name).symlink_to(PREPARED / name)
    return data_dir


async def start(redis_url: str, data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    data_dir = borrowing_data_dir(data_dir)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "semcache.proxy", "serve", "--port", str(port), "--redis", redis_url,
        "--data-dir", str(data_dir), "--device", "cpu", env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


async def ready(session: aiohttp.ClientSession, proc: asyncio.subprocess.Process, base: str) -> None:
    for _ in range(1200):
        if proc.returncode is not None:
            raise AssertionError((await proc.stdout.read()).decode()[-3000:])
        try:
            async with session.get(base + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"{base} not ready in 600 s")


async def test_a_second_instance_starts_and_shares_the_cache(redis_url: str, tmp_path: Path) -> None:
    first, first_url = await start(redis_url, tmp_path / "one")
    second, second_url = await start(redis_url, tmp_path / "two")
    body = {"model": "smollm2", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Name a colour."}]}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            await ready(session, first, first_url)
            await ready(session, second, second_url)
            outcomes = []
            for base in (first_url, second_url):
                async with session.post(base + "/v1/chat/completions", json=body,
                                        headers={"Authorization": "Bearer sk-two"}) as resp:
                    assert resp.status == 200, await resp.text()
                    outcomes.append(resp.headers["X-Semcache"])
                await asyncio.sleep(1.0)  # the write-back is off the response path
            assert outcomes == ["miss", "hit-exact"]
    finally:
        for proc in (first, second):
            if proc.returncode is None:
                proc.terminate()
        logs = [(await proc.communicate())[0].decode() for proc in (first, second)]
    ports = [line.split("port ")[1].split(":")[0] for log in logs for line in log.splitlines()
             if "starting the bundled backend on port" in line]
    assert len(ports) == 2 and ports[0] != ports[1], logs
