"""Fixtures of the admin tests (helpers that are not fixtures live in admin_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import build_app

TOKEN = "s3cret"


@pytest.fixture
async def token_proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, tmp_path: Path) -> Any:
    """The proxy with `server.admin_token` set."""
    settings = make_settings(redis_url, upstream.base_url, tmp_path, server__admin_token=TOKEN)
    return await aiohttp_client(build_app(settings))
