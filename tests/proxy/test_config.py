"""Configuration: file, environment, flags; invalid values stop start-up naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from semcache.proxy.config import DEFAULT_CONFIG, ConfigError, load_settings


def test_bundled_config_matches_the_defaults() -> None:
    from semcache.proxy.config import Settings

    assert load_settings(DEFAULT_CONFIG, environ={}) == Settings()


def test_environment_then_overrides(tmp_path: Path) -> None:
    env = {"SEMCACHE__SERVER__PORT": "9090", "SEMCACHE__CACHE__SHARED_ACROSS_KEYS": "true",
           "SEMCACHE__JUDGE__THRESHOLD": "0.8", "OTHER": "x"}
    settings = load_settings(environ=env, overrides={"server.port": 7070, "data_dir": tmp_path})
    assert settings.server.port == 7070  # the flag wins over the environment
    assert settings.cache.shared_across_keys is True
    assert settings.judge.threshold == 0.8
    assert settings.data_dir == tmp_path


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SEMCACHE__SERVER__PORT": "eighty"}, "server.port"),
        ({"SEMCACHE__SERVER__PORT": "-1"}, "server.port"),
        ({"SEMCACHE__JUDGE__THRESHOLD": "1.5"}, "judge.threshold"),
        ({"SEMCACHE__CACHE__NOPE": "1"}, "cache.nope"),
        ({"SEMCACHE__REDIS__URL": "http://x"}, "redis.url"),
        ({"SEMCACHE__UPSTREAM__BASE_URL": "ftp://x"}, "upstream.base_url"),
        ({"SEMCACHE__CACHE__ENABLED": "maybe"}, "cache.enabled"),
        ({"SEMCACHE__JUDGE__MAX_WRONG_RATE": "1"}, "judge.max_wrong_rate"),
        ({"SEMCACHE__JUDGE__MAX_WRONG_RATE": "-0.01"}, "judge.max_wrong_rate"),
        ({"SEMCACHE__JUDGE__VERIFY_SAMPLE": "1.5"}, "judge.verify_sample"),
        ({"SEMCACHE__JUDGE__VERIFY_SAMPLE": "nan"}, "judge.verify_sample"),
        ({"SEMCACHE__JUDGE__ANSWER_SIMILARITY": "-1"}, "judge.answer_similarity"),
        ({"SEMCACHE__JUDGE__ANSWER_SIMILARITY": "high"}, "judge.answer_similarity"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(environ=env)


def test_adaptive_defaults() -> None:
    cache = load_settings(environ={}).judge
    assert (cache.max_wrong_rate, cache.verify_sample, cache.answer_similarity) == (0.05, 0.0, 0.9)
    cache = load_settings(environ={"SEMCACHE__JUDGE__VERIFY_SAMPLE": "0.25"}).judge
    assert cache.verify_sample == 0.25


def test_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'x'\n")
    with pytest.raises(ConfigError, match="server.port"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_cli_reports_invalid_configuration_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "semcache.proxy", "serve", "--upstream", "not-a-url"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "semcache: invalid configuration: upstream.base_url: expected 'bundled' or an http(s):// "
        "URL, got 'not-a-url'"
    ]


def test_shutdown_stages_share_one_grace_period() -> None:
    import time

    from semcache.proxy.resources import Shutdown

    shutdown = Shutdown()
    assert shutdown.remaining(30.0) == 30.0  # no shutdown yet: the whole grace
    shutdown.deadline = time.monotonic() + 5.0
    assert 4.5 < shutdown.remaining(30.0) <= 5.0  # the handlers took the rest
    shutdown.deadline = time.monotonic() - 1.0
    assert shutdown.remaining(30.0) == 0.1  # past it: a last moment, never a wait
