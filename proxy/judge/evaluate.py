"""`semcache eval PAIRS.jsonl[.gz]`: how right the hit decision is, measured on labelled pairs.

Each line is {"a": prompt, "b": prompt, "label": 1 if one answer serves both else 0,
"kind": optional category}. Side `a` plays the cached entry and `b` the incoming request.
Both sides are embedded with the real encoder (the CPU variant the proxy uses by default).
The defaults are measured through the `Judge` the proxy uses, one session per pair
(`defaults` in the results): what eval reports there is what the proxy serves. For the
curves, the judge's parts (checks fired, the pair model's score) are computed once per pair
and `judge.rule` is swept over thresholds for each stage: the static threshold alone, with
the cheap checks, with the model ("verifier"), and with both.
Reported per threshold: precision, recall, F1 and the wrong-hit rate (the fraction of label-0
pairs that would be served). The operating point is the lowest threshold whose precision
reaches --target-precision. Adaptive thresholds are measured by replaying the pairs as a
stream of lookups (see `simulate_adaptive`). Writes loadtest/results/eval_<name>.json and .png.

`--split dev|test` keeps one side of a fixed hash split of the pairs (20% test): training
and threshold choices use dev; test is held out for the final figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, Settings, load_settings
from .checks import run_checks
from .judge import Ask, Candidate, Judge, needs_model, rule
from .observations import ENTRY_OBSERVATIONS, SCOPE_OBSERVATIONS, MemoryObservations
from .pairs import read_pairs
from .thresholds import MIN_EVIDENCE, applied_threshold, scope_threshold

log = logging.getLogger(__name__)

THRESHOLDS = np.round(np.arange(0.20, 1.0001, 0.005), 3)
VERIFIER_MIN_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)
STAGES = ("static", "checks", "verifier", "checks+verifier")
ADAPTIVE_SAMPLE = 0.1
"""Share of the lookups that would be served which the adaptive replay verifies (and so
answers from the upstream): the evidence its thresholds learn from."""
ADAPTIVE_RUNS = {  # name: (the decision it adapts, with the scope pool as fallback)
    "adaptive": ("static", True),
    "adaptive, per-entry only": ("static", False),
    "checks+verifier+adaptive": ("checks+verifier", True),
    "checks+verifier+adaptive, per-entry only": ("checks+verifier", False),
}


def progress(items: Sequence[Any], label: str, every: int = 1) -> Iterator[Any]:
    """A plain progress bar on stderr (no dependency; silent when stderr is not a TTY
    except for the final line)."""
    total, started, tty = len(items), time.monotonic(), sys.stderr.isatty()
    for i, item in enumerate(items, 1):
        yield item
        if (tty and i % every == 0) or i == total:
            done = int(30 * i / max(total, 1))
            rate = i / max(time.monotonic() - started, 1e-9)
            sys.stderr.write(f"\r{label:<10} [{'#' * done}{'.' * (30 - done)}] {i}/{total} "
                             f"{rate:,.0f}/s")
            if i == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


async def embed_all(settings: Settings, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of `texts`, in chunks that fit the service's queue, and whether the
    encoder read each whole (as the proxy asks, for candidates no verifier reads)."""
    from semcache.embeddings.service import EmbeddingService

    service = await EmbeddingService.open(settings.embeddings, settings.data_dir)
    try:
        chunk = min(256, settings.embeddings.max_queue)
        parts = []
        for start in progress(range(0, len(texts), chunk), "embedding"):
            parts.append(await service.embed_many(texts[start:start + chunk]))
        vectors = np.concatenate(parts) if parts else np.zeros((0, service.dim), np.float32)
        return vectors, np.array([service.fits(t) for t in texts], dtype=bool)
    finally:
        await service.close()


def metrics(served: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(served & (labels == 1)))
    fp = int(np.sum(served & (labels == 0)))
    pos, neg = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "wrong_hit_rate": round(fp / neg, 4) if neg else 0.0, "served": tp + fp}


def pair_decision(i: int, threshold: float, sims: np.ndarray, fired: list[tuple[str, ...]],
                  scores: np.ndarray | None, stage: str, *, verify_below: float,
                  verifier_min: float, whole: np.ndarray | None = None) -> bool:
    """judge.rule for pair i at one threshold with `stage`'s parts: the checks, the model's
    score where the pair is in its band, and whether the encoder read both prompts whole
    (`whole`; None: all were)."""
    sim = float(sims[i])
    score = None
    if "verifier" in stage and scores is not None and sim >= threshold and needs_model(
            sim, verify_below):
        score = float(scores[i])
    serve, _ = rule(sim, threshold, threshold, score, fired[i] if "checks" in stage else (),
                    model_min=verifier_min, read_whole=True if whole is None else bool(whole[i]))
    return serve


def served_at(threshold: float, sims: np.ndarray, fired: list[tuple[str, ...]],
              scores: np.ndarray | None, stage: str, *, verify_below: float,
              verifier_min: float, whole: np.ndarray | None = None) -> np.ndarray:
    """Run judge.rule on every pair for one stage at one threshold."""
    return np.array([pair_decision(i, threshold, sims, fired, scores, stage,
                                   verify_below=verify_below, verifier_min=verifier_min,
                                   whole=whole) for i in range(len(sims))], dtype=bool)


def sweep(sims: np.ndarray, labels: np.ndarray, fired: list[tuple[str, ...]],
          scores: np.ndarray | None, *, verify_below: float, verifier_min: float,
          stages: Sequence[str] = STAGES, whole: np.ndarray | None = None,
          ) -> dict[str, list[dict[str, float]]]:
    curves: dict[str, list[dict[str, float]]] = {}
    for stage in stages:
        if "verifier" in stage and scores is None:
            continue
        curves[stage] = [
            {"threshold": float(t), **metrics(served_at(
                float(t), sims, fired, scores, stage, verify_below=verify_below,
                verifier_min=verifier_min, whole=whole), labels)}
            for t in THRESHOLDS
        ]
    return curves


def simulate_adaptive(entries: Sequence[str], sims: np.ndarray, labels: np.ndarray,
                      fired: list[tuple[str, ...]], scores: np.ndarray | None, *, stage: str,
                      default: float, verify_below: float, verifier_min: float,
                      max_wrong_rate: float, sample: float, seed: int,
                      scope_pool: bool = True, whole: np.ndarray | None = None) -> dict[str, Any]:
    """Adaptive thresholds as the online process the proxy runs, replayed over the pairs.

    In a seeded random order each pair is one lookup: `entries[i]` (side `a`, by its text, so
    a question in several pairs gathers the observations of all of them) is the cached entry,
    side `b` the request. Each lookup's threshold is `decision.applied_threshold` over the
    observations made before it: the entry's own (the newest ENTRY_OBSERVATIONS) over the
    pool's (the whole set is one scope: the newest SCOPE_OBSERVATIONS), starting from
    `default`; `stage`'s checks and verifier decide as in the proxy.

    Observations come from verification, as in the proxy (`judge.verify_sample`): of the
    lookups that the un-adapted decision (at `default`) would serve, a seeded fraction
    `sample` is verified, every one while the pool holds fewer than MIN_EVIDENCE. The label
    stands for the comparison of the cached answer with the upstream's, and is recorded.
    Sampling from the un-adapted decision, not from what the adapted one serves, keeps the
    pool a fair picture of every threshold above `default` (the proxy compares a miss's
    upstream answer with the candidate it turned down for that, at no extra cost). A
    verified lookup counts as not served (the upstream answered it, as in vCache; the proxy
    instead serves a sampled hit and checks it in the background: see
    `counting_verified_as_served`). The rest are served when they reach their threshold.
    """
    rng = np.random.default_rng(seed)
    order, draws = rng.permutation(len(sims)), rng.random(len(sims))
    own: dict[str, deque[tuple[float, bool]]] = {}
    pool: deque[tuple[float, bool]] = deque(maxlen=SCOPE_OBSERVATIONS)
    scope_t = default
    served = np.zeros(len(sims), dtype=bool)
    verified = np.zeros(len(sims), dtype=bool)
    verified_hit = np.zeros(len(sims), dtype=bool)
    for i in order:
        sim, entry = float(sims[i]), entries[i]
        if not pair_decision(i, default, sims, fired, scores, stage, verify_below=verify_below,
                             verifier_min=verifier_min, whole=whole):
            continue  # not even the un-adapted decision would serve it
        hit = sim >= applied_threshold(own.get(entry, ()), scope_t, default, max_wrong_rate)
        cold = scope_pool and len(pool) < MIN_EVIDENCE
        if sample <= 0 or (draws[i] >= sample and not cold):
            served[i] = hit
            continue
        verified[i] = True
        verified_hit[i] = hit
        observation = (round(sim * 10000) / 10000, bool(labels[i] == 1))  # as Redis keeps it
        own.setdefault(entry, deque(maxlen=ENTRY_OBSERVATIONS)).append(observation)
        if scope_pool:
            pool.append(observation)
            scope_t = scope_threshold(pool, default, max_wrong_rate)
    raised = sum(applied_threshold(obs, scope_t, default, max_wrong_rate) > scope_t
                 for obs in own.values())
    return {
        **metrics(served, labels),
        "verified": int(verified.sum()),
        "verified_wrong": int(np.sum(verified & (labels == 0))),
        "final_scope_threshold": scope_t,
        "entries_with_observations": len(own),
        "entries_above_scope_threshold": int(raised),
        "counting_verified_as_served": metrics(served | verified_hit, labels),
    }


def adaptive_runs(entries: Sequence[str], sims: np.ndarray, labels: np.ndarray,
                  fired: list[tuple[str, ...]], scores: np.ndarray | None, judge: Any, *,
                  sample: float, seed: int, whole: np.ndarray | None = None) -> dict[str, Any]:
    runs = {}
    for name, (stage, pool) in ADAPTIVE_RUNS.items():
        if "verifier" in stage and scores is None:
            continue
        default = judge.model_floor if "verifier" in stage else judge.threshold
        runs[name] = {"adapts": stage, "default": default, **simulate_adaptive(
            entries, sims, labels, fired, scores, stage=stage, default=default,
            verify_below=judge.verify_below, verifier_min=judge.model_min,
            max_wrong_rate=judge.max_wrong_rate, sample=sample, seed=seed, scope_pool=pool,
            whole=whole)}
    return {"sample": sample, "seed": seed, "max_wrong_rate": judge.max_wrong_rate, "runs": runs}


def operating_point(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """Highest-recall point whose precision reaches the target (None: never reached)."""
    ok = [p for p in curve if p["precision"] >= target and p["served"] > 0]
    return max(ok, key=lambda p: (p["recall"], -p["threshold"])) if ok else None


def at_threshold(curve: list[dict[str, float]], threshold: float) -> dict[str, float]:
    return min(curve, key=lambda p: abs(p["threshold"] - threshold))


def by_kind(rows: list[dict[str, Any]], served: np.ndarray) -> dict[str, dict[str, float]]:
    """Per kind: the fraction served (recall for label-1 kinds, wrong-hit rate for label 0)."""
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({r.get("kind", "") for r in rows} - {""}):
        idx = [i for i, r in enumerate(rows) if r.get("kind") == kind]
        out[kind] = {"label": rows[idx[0]]["label"], "pairs": len(idx),
                     "served": round(float(np.mean(served[idx])), 3)}
    return out


def plot(curves: dict[str, list[dict[str, float]]], title: str, out: Path,
         points: dict[str, dict[str, Any]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for stage, curve in curves.items():
        pts = [p for p in curve if p["served"] > 0]
        ax.plot([p["recall"] for p in pts], [p["precision"] for p in pts], label=stage)
    for (name, point), marker in zip((points or {}).items(), "os^vD", strict=False):
        ax.plot([point["recall"]], [point["precision"]], marker, color="black", ms=6,
                fillstyle="none", label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0.4, 1.01)
    ax.axhline(0.95, color="grey", lw=0.6, ls="--")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semcache eval", description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", type=Path, help="labelled pairs, .jsonl or .jsonl.gz")
    p.add_argument("--split", choices=["all", "dev", "test", "calibration"], default="all")
    p.add_argument("--limit", type=int, default=0, help="first N pairs of the split (0: all)")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--config", type=Path, help="config.toml (default: the bundled one)")
    p.add_argument("--data-dir", type=Path, help="data directory holding the exported models")
    p.add_argument("--no-verifier", action="store_true", help="skip the verifier stages")
    p.add_argument("--verify-sample", type=float, default=ADAPTIVE_SAMPLE,
                   help="adaptive replay: share of would-be hits verified (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="adaptive replay: order and sample seed")
    p.add_argument("--name", help="results name (default: from the file and split)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    return p


class _Scorer:
    """The pair model behind the judge's async interface, from scores computed up front."""

    def __init__(self, scored: dict[tuple[str, str], float],
                 model: Callable[[list[tuple[str, str]]], np.ndarray]) -> None:
        self.scored = scored
        self.model = model

    async def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.array([self.scored[p] if p in self.scored else float(self.model([p])[0])
                         for p in pairs], dtype=np.float32)


async def judge_verdicts(rows: list[dict[str, Any]], sims: np.ndarray, whole: np.ndarray,
                         settings: Settings, scorer: _Scorer | None) -> list[Any]:
    """The verdict of the `Judge` the proxy uses on each pair, with the configured defaults:
    one lookup per pair, side `a` the entry, side `b` the request; no adaptive evidence."""
    read_whole: dict[str, bool] = {}
    for i, r in enumerate(rows):
        read_whole[r["a"]] = read_whole.get(r["a"], True) and bool(whole[i])
        read_whole[r["b"]] = read_whole.get(r["b"], True) and bool(whole[i])
    judge = Judge(settings.judge, MemoryObservations(max_wrong_rate=settings.judge.max_wrong_rate),
                  reads_whole=lambda text: read_whole.get(text, True))
    judge.model = scorer if settings.judge.model else None
    out = []
    for i, r in enumerate(rows):
        session = judge.session(Ask(text=r["b"], scope="eval"))
        out.append(await session.consider(Candidate(
            entry_id=str(i), text=r["a"], similarity=float(sims[i]))))
    return out


def ranking(labels: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Average precision of a score that ranks pairs, and the recall it reaches at 1% and 2%
    of the label-0 pairs served (the judge's score: the model's, 0 where a check fired)."""
    order = np.argsort(-score, kind="stable")
    hits = labels[order] == 1
    positives = max(int(hits.sum()), 1)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    ap = float(np.sum(precision[hits]) / positives)
    negatives = max(int((~hits).sum()), 1)
    fp = np.cumsum(~hits)
    out = {"average_precision": round(ap, 4)}
    for rate in (0.01, 0.02):
        ok = fp <= rate * negatives
        out[f"recall_at_{int(rate * 100)}pct_wrong"] = round(float(tp[ok].max() / positives)
                                                           if ok.any() else 0.0, 4)
    return out


def evaluate(rows: list[dict[str, Any]], settings: Settings, *,
             verifier: Callable[[list[tuple[str, str]]], np.ndarray] | None,
             target: float, sample: float = ADAPTIVE_SAMPLE, seed: int = 0) -> dict[str, Any]:
    """Everything the command reports, for pairs already read (deterministic)."""
    js = settings.judge
    vectors, read = asyncio.run(embed_all(settings, [r["a"] for r in rows] + [r["b"] for r in rows]))
    n = len(rows)
    sims = np.round(np.sum(vectors[:n] * vectors[n:], axis=1).astype(np.float64), 5)
    whole = read[:n] & read[n:]
    labels = np.array([int(r["label"]) for r in rows])
    fired = [run_checks(r["a"], r["b"], js.checks) for r in progress(rows, "checks", 500)]
    scores = None
    if verifier is not None:
        # Every pair the model may see at some threshold of the sweep; NaN elsewhere (never
        # read: a NaN that were would serve nothing).
        band = [i for i in range(n) if sims[i] >= THRESHOLDS[0] and needs_model(
            sims[i], js.verify_below)]
        scores = np.full(n, np.nan)
        pairs = [(rows[i]["a"], rows[i]["b"]) for i in band]
        for start in progress(range(0, len(pairs), 256), "model"):
            chunk = band[start:start + 256]
            scores[chunk] = verifier(pairs[start:start + 256])
    scorer = None
    if verifier is not None:
        scorer = _Scorer({(rows[i]["a"], rows[i]["b"]): float(scores[i])  # type: ignore[index]
                          for i in range(n) if not np.isnan(scores[i])}, verifier)  # type: ignore[index]
    verdicts = asyncio.run(judge_verdicts(rows, sims, whole, settings, scorer))
    served = np.array([v.serve for v in verdicts], dtype=bool)
    result: dict[str, Any] = {"pairs": n, "positives": int(labels.sum()),
                              "target_precision": target}
    result["defaults"] = {**metrics(served, labels), "by_kind": by_kind(rows, served),
                          "reasons": _count([v.reason for v in verdicts])}
    if scores is not None:
        judged = np.where([bool(f) for f in fired], 0.0, np.nan_to_num(scores, nan=0.0))
        judged = np.where(sims >= js.model_floor, judged, 0.0)
        result["defaults"].update(ranking(labels, judged))
        result["model_ranking"] = ranking(labels, np.nan_to_num(scores, nan=0.0))
    curves = sweep(sims, labels, fired, scores, verify_below=js.verify_below,
                   verifier_min=js.model_min, whole=whole)
    result["stages"] = {}
    for stage, curve in curves.items():
        point = operating_point(curve, target)
        floor = js.model_floor if "verifier" in stage else js.threshold
        configured = at_threshold(curve, floor)
        at_floor = served_at(floor, sims, fired, scores, stage, verify_below=js.verify_below,
                             verifier_min=js.model_min, whole=whole)
        result["stages"][stage] = {"operating_point": point, "at_configured_threshold": configured,
                                   "by_kind": by_kind(rows, at_floor), "curve": curve}
    result["adaptive"] = adaptive_runs([r["a"] for r in rows], sims, labels, fired, scores, js,
                                       sample=sample, seed=seed, whole=whole)
    if verifier is not None:
        result["verifier_cost"] = verifier_cost(verifier, rows, sims, js)
    if scores is not None:
        # The model's own cut-off: at the configured floor (how `model_min` is chosen, on the
        # calibration split), and searched with the threshold for the target.
        grid = {}
        for vmin in VERIFIER_MIN_GRID:
            curve = sweep(sims, labels, fired, scores, verify_below=js.verify_below,
                          verifier_min=vmin, stages=("checks+verifier",),
                          whole=whole)["checks+verifier"]
            grid[str(vmin)] = {"at_floor": at_threshold(curve, js.model_floor),
                               "operating_point": operating_point(curve, target)}
        result["checks+verifier_by_verifier_min"] = grid
    result["too_long"] = int(n - whole.sum())  # pairs the encoder did not read whole
    result["check_fired"] = {  # [on label-0 pairs, on label-1 pairs]
        name: [int(sum(name in f and lab == k for f, lab in zip(fired, labels, strict=True)))
               for k in (0, 1)] for name in js.checks}
    return result


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


def verifier_cost(verifier: Callable[[list[tuple[str, str]]], np.ndarray],
                  rows: list[dict[str, Any]], sims: np.ndarray, js: Any) -> dict[str, float]:
    """Added latency of one model run (one candidate, as on the hit path) and the share of
    pairs whose similarity falls in the model's band (how often it runs)."""
    sample = [(r["a"], r["b"]) for r in rows[:50]]
    verifier(sample[:2])  # warm-up
    times = []
    for pair in sample:
        t0 = time.perf_counter()
        verifier([pair])
        times.append(time.perf_counter() - t0)
    in_band = np.array([x >= js.model_floor and needs_model(float(x), js.verify_below)
                        for x in sims], dtype=bool)
    return {"p50_ms": round(1000 * float(np.median(times)), 2),
            "p95_ms": round(1000 * float(np.percentile(times, 95)), 2),
            "share_of_pairs_in_band": round(float(np.mean(in_band)), 4)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    try:
        settings = load_settings(args.config, overrides={"data_dir": args.data_dir})
    except ConfigError as e:
        print(f"semcache eval: {e}", file=sys.stderr)
        return 2
    # The proxy's default on a CPU-only host: the int8 encoder on the CPU.
    settings = replace(settings, embeddings=replace(settings.embeddings, device="cpu"))
    rows = read_pairs(args.pairs, args.split, args.limit)
    if rows and isinstance(rows[0].get("a"), list):
        return conversations(args, rows, settings)
    if not rows:
        print("semcache eval: no pairs", file=sys.stderr)
        return 2
    verifier = None
    if not args.no_verifier:
        from .model import load_scorer

        verifier = load_scorer(settings.judge, settings.data_dir)
    else:
        settings = replace(settings, judge=replace(settings.judge, model=False))
    started = time.monotonic()
    result = evaluate(rows, settings, verifier=verifier, target=args.target_precision,
                      sample=args.verify_sample, seed=args.seed)
    stem = args.pairs.name.split(".")[0]
    name = args.name or (stem if args.split == "all" else f"{stem}_{args.split}")
    from semcache.loadtest.machine import machine_info

    result = {"name": name, "file": str(args.pairs), "split": args.split, "limit": args.limit,
              "threshold": settings.judge.threshold, "checks": list(settings.judge.checks),
              "model": _model_name(settings),
              "model_floor": settings.judge.model_floor,
              "verify_below": settings.judge.verify_below,
              "model_min": settings.judge.model_min,
              "max_wrong_rate": settings.judge.max_wrong_rate,
              "seconds": round(time.monotonic() - started, 1), "machine": machine_info(), **result}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"eval_{name}.json").write_text(json.dumps(result, indent=1))
    runs = result["adaptive"]["runs"]
    if importlib.util.find_spec("matplotlib") is None:
        print("semcache eval: no PR curve (matplotlib is not installed: pip install 'semcache[eval]')",
              file=sys.stderr)
    else:
        plot({k: v["curve"] for k, v in result["stages"].items()},
             f"{name}: {result['pairs']} pairs ({result['positives']} positive)",
             args.out / f"eval_{name}.png",
             points={k: v for k, v in runs.items() if "per-entry" not in k})
    report(result)
    return 0


def conversations(args: argparse.Namespace, rows: list[dict[str, Any]], settings: Settings) -> int:
    """Conversation pairs: replayed turn by turn through a running proxy (loadtest/
    replay_conversations.py); per turn, served or not against its label."""
    from semcache.loadtest.machine import machine_info
    from semcache.loadtest.replay_conversations import replay

    if args.no_verifier:
        settings = replace(settings, judge=replace(settings.judge, model=False))
    result = asyncio.run(replay(rows, settings))
    stem = args.pairs.name.split(".")[0]
    name = args.name or stem
    out = {"name": name, "file": str(args.pairs), "model": _model_name(settings) if
           settings.judge.model else None, "machine": machine_info(), **result}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"eval_{name}.json").write_text(json.dumps(out, indent=1))
    for part in ("all_turns", "later_turns", "last_turns"):
        r = result[part]
        print(f"{name} {part}: {r['turns']} turns, P={r['precision']:.3f} R={r['recall']:.3f} "
              f"wrong={r['wrong_hit_rate']:.3f}")
    return 0


def _model_name(settings: Settings) -> str:
    from .model import SHIPPED, teacher_built

    def name(folder: Path) -> str:
        info = folder / "model.json"
        return json.loads(info.read_text()).get("name", str(folder)) if info.is_file() else str(folder)

    if settings.judge.model_path:
        return name(Path(settings.judge.model_path))
    teacher = teacher_built(settings.data_dir)
    if teacher is None:
        return name(SHIPPED)
    return (f"{name(teacher)} for pairs up to {settings.judge.teacher_max_chars} characters, "
            f"{name(SHIPPED)} beyond (CPU)")


def report(result: dict[str, Any]) -> None:
    print(f"{result['name']}: {result['pairs']} pairs, {result['positives']} positive")
    d = result["defaults"]
    extra = (f" AP={d['average_precision']:.3f} R@1%={d['recall_at_1pct_wrong']:.3f}"
             if "average_precision" in d else "")
    print(f"defaults (the judge, as the proxy): P={d['precision']:.3f} R={d['recall']:.3f} "
          f"wrong={d['wrong_hit_rate']:.3f}{extra}  reasons {d['reasons']}")
    print(f"{'stage':<17}{'at threshold':>14}{'P':>7}{'R':>7}{'wrong':>7}   operating point "
          f"(precision >= {result['target_precision']})")
    for stage, s in result["stages"].items():
        c, p = s["at_configured_threshold"], s["operating_point"]
        op = (f"t={p['threshold']:.3f} P={p['precision']:.3f} R={p['recall']:.3f} "
              f"wrong={p['wrong_hit_rate']:.3f}") if p else "not reached"
        print(f"{stage:<17}{c['threshold']:>14.3f}{c['precision']:>7.3f}{c['recall']:>7.3f}"
              f"{c['wrong_hit_rate']:>7.3f}   {op}")
    grid = result.get("checks+verifier_by_verifier_min")
    if grid:
        print("checks+verifier at the floor, by verifier_min: " + "  ".join(
            f"{vmin}: P={g['at_floor']['precision']:.3f} R={g['at_floor']['recall']:.3f}"
            for vmin, g in grid.items()))
    adaptive = result.get("adaptive")
    if adaptive:
        print(f"adaptive replay: {adaptive['sample']:.0%} of would-be hits verified (not served), "
              f"max wrong rate {adaptive['max_wrong_rate']}, seed {adaptive['seed']}")
        for run_name, r in adaptive["runs"].items():
            print(f"  {run_name:<42} P={r['precision']:.3f} R={r['recall']:.3f} "
                  f"wrong={r['wrong_hit_rate']:.3f} verified={r['verified']} "
                  f"scope threshold {r['final_scope_threshold']:.4f}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
