"""PNG plots of load-test results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(payload: dict[str, Any], png: Path) -> None:
    """Latency percentiles by outcome over time, and the hit rate over time."""
    plt = _pyplot()
    ts = payload["timeseries"]
    fig, (ax_lat, ax_hit) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                         gridspec_kw={"height_ratios": [2, 1]})
    styles = {"p50_ms": "-", "p95_ms": "--", "p99_ms": ":"}
    for i, (outcome, series) in enumerate(sorted(ts["by_outcome"].items())):
        color = f"C{i}"
        for key, style in styles.items():
            points = [(t, v) for t, v in zip(ts["t"], series[key], strict=True) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax_lat.plot(xs, ys, style, color=color,
                            label=f"{outcome} {key[:-3]}" if key == "p50_ms" or i == 0 else None)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms, log)")
    ax_lat.set_title("latency by outcome (solid p50, dashed p95, dotted p99)")
    ax_lat.legend(fontsize=8, ncol=3)
    ax_lat.grid(alpha=0.3)
    hits = [(t, v) for t, v in zip(ts["t"], ts["hit_rate"], strict=True) if v is not None]
    lines = []
    if hits:
        xs, ys = zip(*hits, strict=True)
        lines += ax_hit.plot(xs, ys, color="C2", label="hit rate")
    ax_rps = ax_hit.twinx()
    lines += ax_rps.plot(ts["t"], ts["rps"], color="C7", alpha=0.6, label="requests/s")
    ax_hit.set_ylim(0, 1)
    ax_hit.set_ylabel("hit rate")
    ax_rps.set_ylabel("requests/s")
    ax_hit.set_xlabel("seconds into the run")
    ax_hit.grid(alpha=0.3)
    ax_hit.legend(handles=lines, loc="lower right", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_bench(result: dict[str, Any], png: Path) -> None:
    """Proxy exact hits vs the upstream called directly: percentiles and throughput per
    concurrency."""
    plt = _pyplot()
    rows = result["runs"]
    levels = list(dict.fromkeys(r["level"] for r in rows))
    fig, (ax_lat, ax_rps) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.35
    for j, target in enumerate(("direct", "proxy")):
        for k, q in enumerate(("p50_ms", "p99_ms")):
            ys = [_best(rows, c, target)["all"][q] for c in levels]
            xs = [i + (j - 0.5) * width for i in range(len(levels))]
            ax_lat.bar(xs, ys, width * (0.9 if k == 0 else 0.5), alpha=0.9 if k == 0 else 0.5,
                       color=f"C{j}", label=f"{target} {q[:-3]}")
        ax_rps.bar([i + (j - 0.5) * width for i in range(len(levels))],
                   [_best(rows, c, target)["rps"] for c in levels], width, color=f"C{j}", label=target)
    for ax in (ax_lat, ax_rps):
        ax.set_xticks(range(len(levels)), [f"c={c}/s" if "@" in c else f"c={c}" for c in levels])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_title("exact hits through the proxy vs the upstream directly")
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_title("throughput")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _best(rows: list[dict[str, Any]], level: str, target: str) -> dict[str, Any]:
    """The summary of the median-p50 round of one target and load level."""
    matches = sorted((r for r in rows if r["level"] == level and r["target"] == target),
                     key=lambda r: r["summary"]["all"]["p50_ms"])
    return matches[len(matches) // 2]["summary"]
