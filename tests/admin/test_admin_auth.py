"""Who may use the admin API: the token when one is set, else loopback clients only."""

from __future__ import annotations

from typing import Any

import pytest
from admin.admin_helpers import api

from semcache.proxy.admin.auth import AdminForbiddenError, authorize, is_loopback
from semcache.proxy.errors import UnauthorizedError


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_addresses(remote: str) -> None:
    assert is_loopback(remote)
    authorize("", None, remote)  # no token: loopback is served


@pytest.mark.parametrize("remote", ["10.0.0.5", "192.168.1.2", "::ffff:10.0.0.1", "2001:db8::1", "",
                                    None, "not-an-ip"])
def test_no_token_refuses_other_clients(remote: str | None) -> None:
    assert not is_loopback(remote)
    with pytest.raises(AdminForbiddenError) as e:
        authorize("", None, remote)
    assert e.value.status == 403


@pytest.mark.parametrize("remote", ["127.0.0.1", "10.0.0.5"])
def test_token_is_required_from_everywhere_once_set(remote: str) -> None:
    for header in (None, "", "Bearer", "Bearer ", "Basic s3cret", "Bearer wrong", "Bearer s3cre"):
        with pytest.raises(UnauthorizedError):
            authorize("s3cret", header, remote)
    authorize("s3cret", "Bearer s3cret", remote)
    authorize("s3cret", "bearer s3cret", remote)


async def test_loopback_client_without_token(proxy: Any) -> None:
    body = await api(proxy, "GET", "stats")
    assert body["window"]["total"] == 0


async def test_token_none_wrong_right(token_proxy: Any) -> None:
    missing = await api(token_proxy, "GET", "stats", expect=401)
    assert missing["error"]["type"] == "authentication_error"
    assert missing["error"]["code"] == "missing_admin_token"
    wrong = await api(token_proxy, "GET", "stats", token="nope", expect=401)
    assert wrong["error"]["code"] == "invalid_admin_token"
    assert "s3cret" not in str(wrong)
    assert (await api(token_proxy, "GET", "stats", token="s3cret"))["window"]["total"] == 0
    # every route is guarded, writes included
    await api(token_proxy, "PUT", "threshold", {"threshold": 0.5}, expect=401)
    await api(token_proxy, "POST", "feedback", {"entry_id": "x"}, token="nope", expect=401)
    await api(token_proxy, "DELETE", "entries/abc", expect=401)


async def test_dashboard_page_is_served_without_token(token_proxy: Any) -> None:
    page = await token_proxy.get("/admin")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    assert "dashboard.js" in await page.text()
    js = await token_proxy.get("/admin/static/dashboard.js")
    assert js.status == 200
    assert (await token_proxy.get("/admin/static/..%2Fadmin.py")).status == 404
