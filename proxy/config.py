"""One frozen settings object, built once at start from config.toml, the environment
(`SEMCACHE__SECTION__KEY`) and CLI flags, in that order of precedence (last wins).

Nothing here runs at import time: `load_settings` is called by the CLI and by tests.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semcache.backend.settings import BackendSettings
from semcache.embeddings.settings import EmbeddingSettings
from semcache.index.connect import RedisURLError, parse_redis_url
from semcache.index.vectors import IndexSettings

from .errors import ProxyError
from .judge.settings import ALL_CHECKS, JudgeSettings

ENV_PREFIX = "SEMCACHE__"
MAX_PORT = 65535
DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.toml"
"""The default configuration, shipped inside the package (the top-level config.toml links to it)."""


class ConfigError(ProxyError):
    """Invalid configuration; the message names the key."""


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    host: str = "127.0.0.1"
    """Address the proxy listens on."""

    port: int = 8080
    """Port the proxy listens on."""

    max_body_bytes: int = 4 * 1024 * 1024
    """Request bodies larger than this get 413."""

    max_json_values: int = 100_000
    """Bodies whose JSON holds more values than this (arrays, objects and their elements,
    counted outside strings) get 400. Parsing time grows with the values, not the bytes, and
    happens on the event loop: one 4 MB body of small nested arrays stalled every request
    for seconds. Long prompts are single strings and count as one; a prompt sent as token
    ids counts one per token."""

    admin_token: str = ""
    """Bearer token for /admin/api, and for /metrics too once set; empty: the admin API
    answers only on loopback."""

    metrics_token: str = ""
    """A bearer token for /metrics alone (Prometheus' scrape credential), accepted besides
    admin_token. With neither set, /metrics is open, as Prometheus endpoints usually are."""

    max_in_flight: int = 256
    """Requests in the cache's own stages (parse, lookup, replay) at once; more wait for a
    place (proxy/pipeline/admission.py). A miss gives its place back while the upstream
    works, so this bounds the event loop's queue, not the upstream's concurrency."""

    max_wait_s: float = 1.0
    """How long a request may wait for a place; past it, 503 with Retry-After. Hits then
    neither queue without bound nor fall through to the paid upstream."""

    shutdown_grace_s: float = 30.0
    """On SIGTERM, how long in-flight requests and write-backs may take to finish."""

    reuse_port: bool = False
    """Listen with SO_REUSEPORT, so several `semcache serve` processes on one host share the
    port and the kernel spreads connections over them (one Python process uses one core)."""

    uvloop: bool = True
    """Run the event loop on uvloop where it is installed (Linux; a dependency there): the
    proxy is one event loop per process, and uvloop's loop and sockets cost less CPU per
    request than asyncio's. False, or no uvloop: the standard asyncio loop."""

    access_log: bool = False
    """One log line per request. Off by default: on the exact-hit path it cost 15% of the
    throughput (loadtest/results/proxy_cpu-2core.json); /metrics and the admin API count
    every request anyway."""


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    url: str = "embedded"
    """`embedded` starts a managed redis-server child; or `redis://` / `rediss://` /
    `unix://` (one server), `redis+cluster://host:port[,host:port]` (a Redis Cluster), or
    `redis+sentinel://host:26379[,host:26379]/mymaster[/db]` (the master Sentinel names);
    see index/connect.py."""

    cluster: bool = False
    """Treat a redis:// or rediss:// URL as a node of a Redis Cluster (the same as
    redis+cluster://)."""

    key_prefix: str = "semcache:"
    """Prefix of every key semcache writes, so one Redis can hold other data too."""

    timeout_s: float = 0.25
    """How long Redis may take to answer one call; past it the request is served as a
    bypass. Measured against Redis: time the reply waited in a busy event loop's queue does
    not count (proxy/looplag.py). The socket timeout is 8x this (at least 2 s), a hard stop
    for a loop that is late by more than that."""

    retry_after_s: float = 1.0
    """After a Redis failure, how long to bypass before trying Redis again."""


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    base_url: str = "bundled"
    """OpenAI-compatible base URL (e.g. http://127.0.0.1:9000/v1), or `bundled` to start
    `semcache backend` as a child process and forward misses to it."""

    anthropic_base_url: str = ""
    """Base URL of /v1/messages (the Anthropic Messages API, e.g.
    https://api.anthropic.com/v1), so one semcache fronts both; "" = `base_url`."""

    timeout_s: float = 300.0
    """Total time allowed for one upstream request; past it the client gets 504."""

    connect_timeout_s: float = 10.0
    """Time allowed to connect to the upstream; a refused connection is a 502."""

    max_connections: int = 256
    """Most concurrent connections to the upstream."""


@dataclass(frozen=True, kw_only=True)
class CacheSettings:
    enabled: bool = True
    """False turns the proxy into a pure pass-through (every answer is `bypass`)."""

    ttl_s: int = 7 * 24 * 3600
    """Default lifetime of an entry; `X-Semcache-TTL` overrides it per request."""

    max_ttl_s: int = 30 * 24 * 3600
    """Upper bound on `X-Semcache-TTL`."""

    shared_across_keys: bool = False
    """True lets every request share one tenant, with or without a key. Only for a
    single-owner deployment."""

    credential_headers: tuple[str, ...] = ("Authorization", "api-key", "x-api-key",
                                           "x-goog-api-key")
    """Headers that carry a client's credential; the tenant is a keyed hash of every one a
    request carries (proxy/tenants.py). Add any other your clients use: a credential the
    proxy does not know of would let two keys share a tenant."""

    credential_params: tuple[str, ...] = ("api-key", "key")
    """Query parameters that carry a credential (Azure's `api-key`, Google's `key`)."""

    anonymous: str = "bypass"
    """Requests with no credential: `bypass` (the cache is not used: X-Semcache-Reason:
    anonymous) or `shared` (one tenant of their own, which no keyed tenant can reach)."""

    tenant_header: str = ""
    """A header that a trusted app in front of the proxy sets to name the tenant (e.g.
    `X-Semcache-Tenant`, which is not forwarded upstream); hashed in with the credentials. Set,
    a request without it counts as anonymous. Empty: tenants come from credentials alone."""

    tenant_secret: str = ""
    """The key tenant hashes are made with (at least 16 characters). Empty: one is generated
    by the first replica and kept in Redis (`{prefix}tenant-secret`), so every replica on that
    Redis agrees. Changing it gives every tenant a new hash: the cache starts empty."""

    cache_nondeterministic: bool = True
    """Cache answers of requests with temperature > 0 too. The temperature is part of the
    scope either way, so answers never cross temperatures."""

    max_entry_bytes: int = 1024 * 1024
    """Entries larger than this are not stored: the answer, the prompt (the last message)
    and its vector together, as Redis holds them."""

    max_bytes: int = 1024 * 1024 * 1024
    """Bound on what all entries store together (the same measure); past it the least
    recently used are evicted. 0: no bound. Redis needs about 1.3x this in memory for its
    own structures, the LRU set and the event stream."""

    semantic: bool = True
    """Look up paraphrases too (embedding + vector index); false: exact tier only."""

    single_flight: bool = True
    """Identical misses in one scope at the same time make one upstream call, which the
    others follow (proxy/pipeline/flight.py); across replicas by a Redis lock."""

    single_flight_lock_s: float = 5.0
    """Lifetime of the lock that elects one replica's call, renewed every third of it while
    the call runs: a replica that dies holding it frees it within this time."""

    max_entries: int = 1_000_000
    """Bound on the number of entries; the least recently used are evicted (0: no bound)."""

    top_k: int = 4
    """Candidates fetched from the index per lookup; the best one that passes every check
    (threshold, freshness, still in Redis) is served."""

    semantic_max_chars: int = 4000
    """Longer prompts use the exact tier only: the encoder reads ~1,000 characters of a
    prompt, and the near-miss checks take event-loop time that grows with the text."""


@dataclass(frozen=True, kw_only=True)
class CostSettings:
    """Prices used to turn the tokens a hit saved into money saved (dashboard and /metrics)."""

    price_per_1k_prompt: dict[str, float] = field(default_factory=dict)
    """USD per 1,000 prompt tokens, by model name (or a prefix of it: "gpt-4o" prices
    "gpt-4o-2024-08-06"); these win over the built-in list, and "*" prices every model that
    neither names."""

    price_per_1k_completion: dict[str, float] = field(default_factory=dict)
    """USD per 1,000 completion tokens, by model name; "*" as above."""

    builtin_prices: bool = True
    """Price models these tables do not name from a built-in list of common models' list
    prices (proxy/prices.py), so money saved shows from the first hit. Not used with the
    bundled upstream, whose local model costs nothing per token."""

    def __post_init__(self) -> None:
        # Tables come from TOML or the environment (strings): check and coerce them here,
        # once, so that pricing a hit on the request path never has to.
        for name in ("price_per_1k_prompt", "price_per_1k_completion"):
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise ConfigError(f"costs.{name}: expected a table of model = price")
            clean: dict[str, float] = {}
            for model, price in table.items():
                try:
                    value = float(price)
                except (TypeError, ValueError) as e:
                    raise ConfigError(f"costs.{name}.{model}: expected a number, got {price!r}") from e
                if value < 0:
                    raise ConfigError(f"costs.{name}.{model}: must be >= 0, got {value!r}")
                clean[str(model)] = value
            object.__setattr__(self, name, clean)


@dataclass(frozen=True, kw_only=True)
class Settings:
    data_dir: Path = Path(".data")
    """Where the embedded Redis, exported models and the backend's weights live."""

    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    costs: CostSettings = field(default_factory=CostSettings)
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)


def load_settings(
    config_path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: file, then environment, then `overrides` ("section.key": value)."""
    raw: dict[str, Any] = {}
    path = config_path if config_path is not None else DEFAULT_CONFIG
    if config_path is not None or path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            _set_dotted(raw, name[len(ENV_PREFIX) :].lower().split("__"), value, from_env=True)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted.split("."), value, from_env=False)
    return _build(Settings, raw, "")


def _set_dotted(raw: dict[str, Any], parts: list[str], value: Any, *, from_env: bool) -> None:
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parts)}: {part} is not a section")
    # Environment values are strings; they are parsed against the field's type in _coerce.
    node[parts[-1]] = _EnvString(value) if from_env else value


class _EnvString(str):
    """A value that came from the environment and may be parsed into the field's type."""


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown configuration key: {where}{key}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        hint = hints[name]
        dotted = f"{where}{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted}: expected a section")
            kwargs[name] = _build(typing.cast(type, hint), value, dotted + ".")
        else:
            kwargs[name] = _coerce(hint, value, dotted)
    try:
        settings = cls(**kwargs)
    except ValueError as e:  # a section's own checks (backend/settings.py) name their key
        raise ConfigError(str(e)) from e
    _validate(settings, where)
    return settings


def _coerce(hint: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(value, _EnvString):
        value = _parse_env(hint, str(value), dotted)
    if typing.get_origin(hint) is tuple:
        # TOML arrays (and comma-separated environment values) of strings.
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
            return tuple(i.strip() for i in items)
        raise ConfigError(f"{dotted}: expected a list of strings, got {value!r}")
    if hint is Path:
        if isinstance(value, str | Path):
            return Path(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return str(value)
    else:
        return value
    raise ConfigError(f"{dotted}: expected {hint.__name__}, got {value!r}")


def _parse_env(hint: Any, text: str, dotted: str) -> Any:
    try:
        if hint is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError as e:
        raise ConfigError(f"{dotted}: expected {hint.__name__}, got {text!r}") from e
    return text


def _validate(settings: Any, where: str) -> None:
    """Range checks that the type alone does not express."""
    positive = {
        "max_body_bytes", "max_json_values", "max_in_flight", "max_wait_s",
        "single_flight_lock_s", "timeout_s", "connect_timeout_s", "max_connections",
        "ttl_s", "max_ttl_s", "max_batch", "max_queue", "max_entry_bytes", "top_k",
        "semantic_max_chars",
        "hnsw_min_entries", "gpu_min_entries", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
    }
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name in positive and isinstance(value, int | float) and value <= 0:
            raise ConfigError(f"{where}{f.name}: must be > 0, got {value!r}")
    if isinstance(settings, ServerSettings) and not 1 <= settings.port <= MAX_PORT:
        raise ConfigError(f"{where}port: must be between 1 and {MAX_PORT}, got {settings.port!r}")
    if isinstance(settings, JudgeSettings):
        unknown = (set(settings.checks) | set(settings.soft_checks)) - set(ALL_CHECKS)
        if unknown:
            raise ConfigError(f"{where}checks: unknown {sorted(unknown)}; choose from {ALL_CHECKS}")
        for name in ("threshold", "model_floor", "model_min", "model_min_checked",
                     "verify_below", "verify_sample", "answer_similarity"):
            value = getattr(settings, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where}{name}: must be between 0 and 1, got {value!r}")
        if not 0.0 <= settings.max_wrong_rate < 1.0:
            raise ConfigError(f"{where}max_wrong_rate: must be at least 0 and below 1, "
                              f"got {settings.max_wrong_rate!r}")
    if isinstance(settings, CacheSettings):
        _validate_tenancy(settings, where)
        if settings.max_bytes < 0:
            raise ConfigError(f"{where}max_bytes: must be >= 0, got {settings.max_bytes!r}")
        if 0 < settings.max_bytes < settings.max_entry_bytes:
            raise ConfigError(f"{where}max_bytes: must be at least max_entry_bytes "
                              f"({settings.max_entry_bytes}), or 0")
    if isinstance(settings, RedisSettings):
        _validate_redis(settings, where)
    if isinstance(settings, UpstreamSettings) and not (
        settings.base_url == "bundled" or settings.base_url.startswith(("http://", "https://"))
    ):
        raise ConfigError(
            f"{where}base_url: expected 'bundled' or an http(s):// URL, got {settings.base_url!r}"
        )
    if isinstance(settings, UpstreamSettings) and settings.anthropic_base_url and \
            not settings.anthropic_base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}anthropic_base_url: expected an http(s):// URL or \"\", got "
                          f"{settings.anthropic_base_url!r}")


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (RFC 9110 token)."""


def _validate_redis(settings: RedisSettings, where: str) -> None:
    if settings.url == "embedded":
        if settings.cluster:
            raise ConfigError(f"{where}cluster: the embedded Redis is one server; name a "
                              "cluster's URL in redis.url")
    else:
        try:
            parse_redis_url(settings.url, cluster=settings.cluster)
        except RedisURLError as e:
            raise ConfigError(f"{where}url: {e}") from e
    if "{" in settings.key_prefix or "}" in settings.key_prefix:
        raise ConfigError(f"{where}key_prefix: may not hold '{{' or '}}' (Redis Cluster hash "
                          f"tags), got {settings.key_prefix!r}")


def _validate_tenancy(settings: CacheSettings, where: str) -> None:
    if settings.anonymous not in ("bypass", "shared"):
        raise ConfigError(f"{where}anonymous: expected 'bypass' or 'shared', got {settings.anonymous!r}")
    for name in (*settings.credential_headers, *([settings.tenant_header] if settings.tenant_header else [])):
        if not _TOKEN.match(name):
            raise ConfigError(f"{where}credential_headers/tenant_header: not a header name: {name!r}")
    if any(not p for p in settings.credential_params):
        raise ConfigError(f"{where}credential_params: empty parameter name")
    if settings.tenant_secret and len(settings.tenant_secret) < 16:
        raise ConfigError(f"{where}tenant_secret: must be at least 16 characters (or empty)")
