"""The operations kit in deploy/: the alert rules pass promtool and their own unit tests, every
metric the rules and the Grafana dashboard query is one semcache exports (with the labels they
match on), and the Kubernetes manifest is valid against the API's schema and wires semcache
as a sidecar the way the proxy expects."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from semcache.proxy.config import ConfigError, load_settings
from semcache.proxy.metrics import Inventory, Metrics, StateCollector

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "semcache.json"
MANIFEST = DEPLOY / "kubernetes" / "semcache-sidecar.yaml"
K8S_VERSION = "1.30.0"

# Words of PromQL that are not metric names.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
    "unless", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group", "inf", "nan",
}
# Series Prometheus itself makes, and the names of recording rules in the rule file.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
TARGET_LABELS = {"job", "instance"}


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: matched value}) for every series selector in a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: m.group(0).replace("(", " ").replace(")", " "), expr)
    text = re.sub(r"\$\w+", "1m", text)  # Grafana's $__rate_interval and friends
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    found = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", text):
        name, matchers, call = m.group(1), m.group(2), m.group(3)
        if call or name in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        start = m.start()
        if start > 0 and (text[start - 1].isdigit() or text[start - 1] == "."):
            continue  # the exponent or unit of a number (1e-9, 5m)
        labels = dict(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"', matchers or ""))
        found.append((name, labels))
    return found


def exported() -> dict[str, set[str]]:
    """Every sample name semcache's /metrics can carry, with the label names of each."""
    metrics = Metrics()

    class Service:
        stats = type("Stats", (), {"texts": 1, "batches": 1, "batch_size_sum": 1, "truncated": 0,
                                   "lru_hits": 0, "failures": 0, "queue_depth": 0})()
        healthy = True

    class Index:
        def stats(self) -> dict[str, Any]:
            return {"by_kind": {"flat": 1}, "bytes": 1, "scopes": 1}

    metrics.registry.register(StateCollector(
        embeddings=Service, index=Index, inventory=lambda: Inventory(
            entries=1, entry_bytes=1, used_memory=1, keys=1)))
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = set(metrics_labels(metrics, family.name)) | {label for s in family.samples
                                                               for label in s.labels}
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum",
                    "_created"], "summary": ["_count", "_sum", "_created"]}.get(family.type, [""])
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        names.setdefault(family.name, labels)
    return names


def metrics_labels(metrics: Metrics, family: str) -> tuple[str, ...]:
    """Label names of one of Metrics' own metrics (a metric with no series yet shows none)."""
    for value in vars(metrics).values():
        if getattr(value, "_name", None) == family:
            return tuple(value._labelnames)
    return ()


OUTCOMES = {"hit-exact", "hit-semantic", "miss", "bypass"}


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_queried_exists_with_its_labels(source: str) -> None:
    exprs = rule_exprs() if source == "alerts" else dashboard_exprs()
    known = exported()
    recorded = recorded_names()
    assert exprs
    checked = 0
    for expr in exprs:
        found = [(n, ls) for n, ls in selectors(expr) if n not in PROMETHEUS_SERIES | recorded]
        available = set().union(*(known.get(n, set()) for n, _ in found)) | TARGET_LABELS
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            grouped = {label.strip() for label in group.split(",") if label.strip()}
            assert grouped <= available, f"{source}: no metric of {expr!r} has {grouped - available}"
        for name, labels in selectors(expr):
            if name in PROMETHEUS_SERIES or name in recorded:
                continue
            assert name in known, f"{source}: {name} is not a metric semcache exports ({expr!r})"
            unknown = set(labels) - known[name] - TARGET_LABELS
            assert not unknown, f"{source}: {name} has no label {sorted(unknown)}"
            for value in labels.get("outcome", "").split("|"):
                assert not value or value in OUTCOMES or ".*" in value, (name, value)
            checked += 1
    assert checked >= 5


def test_the_name_check_catches_a_typo() -> None:
    """The check above fails for a metric that does not exist or a label it does not have."""
    known = exported()
    ((name, labels),) = selectors('rate(semcache_request_total{outcome="miss"}[5m])')
    assert name == "semcache_request_total" and name not in known
    ((name, labels),) = selectors('sum by (le) (rate(semcache_requests_total{tier="x"}[5m]))')
    assert set(labels) - known[name] == {"tier"}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian's prometheus package; make test installs it)")
    return binary


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_as_their_unit_tests_say() -> None:
    result = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], capture_output=True,
                            text=True, timeout=120, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("t")
    config = (DEPLOY / "prometheus" / "scrape.yml").read_text()
    config = config.replace("/etc/prometheus/secrets/semcache-metrics-token", str(secret))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(RULES, tmp_path / "alerts.yml")
    result = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_manifest_is_valid_against_the_kubernetes_schema() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="the test extra installs kubernetes-validate")
    docs = manifest()
    assert {d["kind"] for d in docs} >= {"Deployment", "NetworkPolicy", "Secret"}
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    sidecar = broken["spec"]["template"]["spec"]["initContainers"][0]
    sidecar["readinesProbe"] = sidecar.pop("readinessProbe")  # a typo the schema must catch
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


def sidecar_and_app() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = next(d for d in manifest() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "semcache"]
    (app,) = pod["containers"]
    return pod, sidecar, app


def test_semcache_runs_as_a_ready_checked_sidecar_with_requests() -> None:
    pod, sidecar, app = sidecar_and_app()
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the app
    port = next(p for p in sidecar["ports"] if p["name"] == "semcache")["containerPort"]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "semcache"}
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(sidecar["resources"]["requests"])
    assert sidecar["securityContext"]["runAsUser"] == 10001  # the image's user
    env = {e["name"]: e for e in sidecar["env"]}
    values = {name: e.get("value", "secret-from-kubernetes") for name, e in env.items()}
    try:
        settings = load_settings(environ=values)
    except ConfigError as e:  # pragma: no cover - the assertion's message
        raise AssertionError(f"bad SEMCACHE__ variable: {e}") from e
    assert settings.server.port == port and settings.upstream.base_url.startswith("https://")
    assert settings.redis.url.startswith("redis://")
    # Listening beyond loopback (for Prometheus): then the admin API and /metrics need tokens.
    assert settings.server.host == "0.0.0.0"
    assert env["SEMCACHE__SERVER__ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert env["SEMCACHE__SERVER__METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
    app_env = {e["name"]: e.get("value") for e in app["env"]}
    assert app_env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
    assert pod["terminationGracePeriodSeconds"] > settings.server.shutdown_grace_s
