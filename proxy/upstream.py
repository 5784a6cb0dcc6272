"""The upstream: any OpenAI-compatible server, reached through one pooled ClientSession.

Requests carry the client's own headers (its credential included) minus hop-by-hop headers
and the proxy's own directives. Failures to reach the upstream become 502, timeouts 504;
an upstream's own error responses are relayed as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

import aiohttp
from aiohttp import web
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


def raw_subpath(request: web.Request) -> str:
    """The path under /v1 as the client sent it, still percent-encoded, so that it reaches
    the upstream byte for byte (`a%2Fb` is one segment to the upstream, `%3F` and `%23` are
    not a query or a fragment). Refused if, decoded in as many rounds as it takes (at most
    four), it could step out of the upstream's /v1."""
    raw = request.rel_url.raw_path
    if not raw.startswith("/v1/"):
        # The router matched the decoded path, so this is /v1 spelled with escapes.
        raise BadRequestError("invalid path", code="invalid_path")
    if "#" in request.raw_path:  # not valid in a request target: the upstream would
        raise BadRequestError("invalid path", code="invalid_path")  # read a fragment
    tail = raw[len("/v1/"):]
    decoded = tail
    for _ in range(4):  # %252e%252e is '..' after two rounds
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        raise BadRequestError("invalid path", code="invalid_path")  # encoded past belief
    if "\\" in decoded or "\x00" in decoded or any(
        seg in (".", "..") for seg in decoded.split("/")
    ):
        raise BadRequestError("invalid path", code="invalid_path")
    return tail


Api = str
"""Which upstream a request goes to: `openai` (`upstream.base_url`) or `anthropic`
(`upstream.anthropic_base_url`, by default the same)."""


def api_of(subpath: str) -> Api:
    """The upstream family of a passed-through path: Anthropic's `messages/...` (token
    counting, batches) goes where /v1/messages goes."""
    return "anthropic" if subpath == "messages" or subpath.startswith("messages/") else "openai"


class Upstream:
    """The OpenAI-compatible base URL (and Anthropic's, by default the same) and the one
    connection pool to them."""

    def __init__(self, base_url: str, settings: UpstreamSettings) -> None:
        self.base_url = URL(base_url.rstrip("/"))
        self.anthropic_base_url = URL((settings.anthropic_base_url or base_url).rstrip("/"))
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

    def url(self, subpath: str, query: str = "", api: Api = "openai") -> URL:
        """The upstream URL of `subpath` (under the base URL's path) with `query`, both
        taken as already percent-encoded and kept exactly: yarl's with_query would encode
        the query a second time (`a%20b` -> `a%2520b`)."""
        base = self.anthropic_base_url if api == "anthropic" else self.base_url
        path = base.raw_path.rstrip("/") + "/" + subpath
        return URL.build(scheme=base.scheme, authority=base.raw_authority, path=path,
                         query_string=query, encoded=True)

    async def send(
        self,
        method: str,
        subpath: str,
        headers: Mapping[str, str],
        body: bytes | aiohttp.StreamReader | None,
        query: str = "",
        api: Api = "openai",
    ) -> aiohttp.ClientResponse:
        """Send a request; the caller reads and releases the response."""
        assert self._session is not None, "Upstream.open() was not called"
        try:
            return await self._session.request(
                method,
                self.url(subpath, query, api),
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
