"""The upstream: any OpenAI-compatible server, reached through one pooled ClientSession.

Requests carry the client's own headers (its credential included) minus hop-by-hop headers
and the proxy's own directives. Failures to reach the upstream become 502, timeouts 504;
an upstream's own error responses are relayed as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .config import UpstreamSettings
from .errors import BadRequestError, UpstreamTimeoutError, UpstreamUnreachableError

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    )
)
# The proxy reads bodies to cache them, so it asks the upstream for identity encoding, and
# aiohttp decodes any compressed body it still gets: the encoding header must not be relayed.
REQUEST_DROP = HOP_BY_HOP | {"accept-encoding", "cache-control"}
RESPONSE_DROP = HOP_BY_HOP | {"content-encoding"}


def request_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in REQUEST_DROP or lower.startswith("x-semcache-"):
            continue
        out.add(name, value)
    return out


def response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in RESPONSE_DROP:
            out.add(name, value)
    return out


def safe_subpath(tail: str) -> str:
    """The path under /v1, refusing anything that could step out of the upstream's /v1."""
    decoded = unquote(unquote(tail))
    if "\\" in decoded or "\x00" in decoded or any(
        seg in (".", "..") for seg in decoded.split("/")
    ):
        raise BadRequestError("invalid path", code="invalid_path")
    return tail


class Upstream:
    """One OpenAI-compatible base URL and the connection pool to it."""

    def __init__(self, base_url: str, settings: UpstreamSettings) -> None:
        self.base_url = URL(base_url.rstrip("/"))
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=self.settings.timeout_s, sock_connect=self.settings.connect_timeout_s
            ),
            auto_decompress=True,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, subpath: str, query: str = "") -> URL:
        path = self.base_url.raw_path.rstrip("/") + "/" + subpath.lstrip("/")
        url = self.base_url.with_path(path, encoded=True)
        return url.with_query(query) if query else url

    async def send(
        self,
        method: str,
        subpath: str,
        headers: Mapping[str, str],
        body: bytes | aiohttp.StreamReader | None,
        query: str = "",
    ) -> aiohttp.ClientResponse:
        """Send a request; the caller reads and releases the response."""
        assert self._session is not None, "Upstream.open() was not called"
        try:
            return await self._session.request(
                method,
                self.url(subpath, query),
                headers=request_headers(headers),
                data=body,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeoutError("the upstream did not answer in time") from e
        except aiohttp.ClientError as e:
            raise UpstreamUnreachableError(f"the upstream is unreachable ({type(e).__name__})") from e
        except OSError as e:
            raise UpstreamUnreachableError("the upstream is unreachable") from e
