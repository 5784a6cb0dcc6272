"""The `semcache` command as a user meets it: every subcommand in --help, --version, ports
checked, and the bundled backend on a port of its own for every instance."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from semcache.proxy.bundled import BundledBackend, BundledBackendError
from semcache.proxy.config import load_settings


def semcache(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semcache.proxy", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_help_lists_every_subcommand() -> None:
    top = semcache("--help")
    assert top.returncode == 0
    for command in ("serve", "backend", "eval", "model"):
        assert f"\n    {command} " in top.stdout, top.stdout
    model = semcache("model", "--help")
    assert model.returncode == 0 and "export" in model.stdout and "train-verifier" in model.stdout
    for args in (["serve", "-h"], ["eval", "-h"], ["model", "export", "-h"]):
        shown = semcache(*args)
        assert shown.returncode == 0 and "usage:" in shown.stdout, (args, shown.stderr)


def test_torch_commands_say_what_to_install_when_torch_is_missing() -> None:
    train = semcache("model", "train-verifier", "-h")  # its help needs no torch
    assert train.returncode == 0 and "usage:" in train.stdout, train.stderr
    backend = semcache("backend", "-h")
    if importlib.util.find_spec("torch") is not None:
        assert backend.returncode == 0 and "usage:" in backend.stdout, backend.stderr
    else:
        assert backend.returncode == 1 and "Traceback" not in backend.stderr
        assert "needs torch" in backend.stderr and "semcache[backend]" in backend.stderr


def test_version() -> None:
    shown = semcache("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"semcache {importlib.metadata.version('semcache')}"


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_serve_refuses_a_port_that_is_not_one(port: str) -> None:
    shown = semcache("serve", "--port", port)
    assert shown.returncode == 2 and "--port" in shown.stderr and "Traceback" not in shown.stderr


@pytest.mark.parametrize(("variable", "key"), [("SEMCACHE__SERVER__PORT", "server.port"),
                                               ("SEMCACHE__BACKEND__PORT", "backend.port")])
def test_configured_ports_are_checked_too(variable: str, key: str) -> None:
    shown = semcache("serve", env={variable: "70000"})
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert shown.stderr.startswith("semcache: invalid configuration: ") and key in shown.stderr


FAKE_BACKEND = """
import socket, sys
from aiohttp import web
fd = int(sys.argv[sys.argv.index("--listen-fd") + 1])
app = web.Application()
app.router.add_get("/healthz", lambda request: web.json_response({"status": "ok"}))
web.run_app(app, sock=socket.socket(fileno=fd), print=None)
"""


class FakeBundled(BundledBackend):
    """The bundled backend's start-up and port handling, with a tiny server as the child."""

    def check_installed(self) -> None:
        pass

    def command(self, listen_fd: int | None = None) -> list[str]:
        real = super().command(listen_fd)
        assert "--listen-fd" in real and f"{self.port}" in real
        return [sys.executable, "-c", FAKE_BACKEND, *real[3:]]


async def test_two_instances_get_a_backend_port_each(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": tmp_path})
    assert settings.backend.port == 0  # the shipped default: a free port at every start
    first, second = FakeBundled(settings), FakeBundled(settings)
    try:
        await first.start()
        await second.start()
        assert first.port != second.port and 0 not in (first.port, second.port)
        async with aiohttp.ClientSession() as session:
            for backend in (first, second):
                async with session.get(backend.base_url.removesuffix("/v1") + "/healthz") as resp:
                    assert resp.status == 200
    finally:
        await first.stop()
        await second.stop()


async def test_a_fixed_backend_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings(environ={}, overrides={"data_dir": tmp_path})
        settings = replace(settings, backend=replace(settings.backend, port=port))
        with pytest.raises(BundledBackendError, match=f"backend.port {port}"):
            await FakeBundled(settings).start()
