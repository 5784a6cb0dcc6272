"""docs/judge.md's tables, generated from the result files (every figure has its file).

    python -m semcache.loadtest.judge_table > docs/judge-results.md

Reads loadtest/results/eval_<set>.json (the defaults through the Judge on a CPU),
eval_<set>_teacher.json (the teacher reading every pair) and eval_<set>_student.json (the
student alone), judge_candidates_h200.json
(every candidate's raw scores on every set, from candidates.py on the GPU machine) and
judge_cost_*.json (the cost per candidate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent / "data"
SETS = [("short_prompts", "short questions and requests"), ("instructions", "instructions"),
        ("statements", "paraphrased statements"), ("near_miss", "near misses 1"),
        ("near_miss_2", "near misses 2"), ("near_miss_3", "near misses 3"),
        ("long_prompts", "long prompts 1"), ("long_prompts_2", "long prompts 2"),
        ("qqp_dev_pairs_calibration", "Quora calibration"), ("qqp_dev_pairs_test", "Quora held out")]


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"eval_{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def row(d: dict[str, Any]) -> str:
    return (f"{d['precision']:.3f} / {d['recall']:.3f} / {100 * d['wrong_hit_rate']:.1f}% / "
            f"{d.get('average_precision', float('nan')):.3f}")


def defaults_table() -> list[str]:
    out = ["| set | pairs | default (CPU: teacher up to 200 characters, student beyond) | "
           "teacher alone (as on a GPU) | student alone (no teacher built) |",
           "| --- | --- | --- | --- | --- |"]
    for name, label in SETS:
        runs = [load(name), load(f"{name}_teacher"), load(f"{name}_student")]
        first = next((r for r in runs if r is not None), None)
        if first is None:
            continue
        cells = [row(r["defaults"]) if r else "-" for r in runs]
        out.append(f"| {label} (`{name}`) | {first['pairs']} | " + " | ".join(cells) + " |")
    for part in ("all_turns", "last_turns"):
        runs = [load(n) for n in ("conversations", "conversations_teacher", "conversations_student")]
        if not any(runs):
            continue
        cells = [f"{r[part]['precision']:.3f} / {r[part]['recall']:.3f} / "
                 f"{100 * r[part]['wrong_hit_rate']:.1f}% / -" if r else "-" for r in runs]
        turns = next(r for r in runs if r)[part]["turns"]
        out.append(f"| conversations, {part.replace('_', ' ')} (`conversations`, replayed) | "
                   f"{turns} turns | " + " | ".join(cells) + " |")
    return out


def _ranking(labels: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    order = np.argsort(-score, kind="stable")
    hits = labels[order] == 1
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    pos, neg = max(int(hits.sum()), 1), max(int((~hits).sum()), 1)
    ap = float(np.sum((tp / np.arange(1, len(hits) + 1))[hits]) / pos)
    r1 = float(tp[fp <= 0.01 * neg].max() / pos) if (fp <= 0.01 * neg).any() else 0.0
    r2 = float(tp[fp <= 0.02 * neg].max() / pos) if (fp <= 0.02 * neg).any() else 0.0
    return ap, r1, r2


def candidates_table() -> list[str]:
    path = RESULTS / "judge_candidates_h200.json"
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    models = list(result["models"])
    out = ["| set | " + " | ".join(f"{m}: AP / R@1% / R@2%" for m in models) + " |",
           "| --- |" + " --- |" * len(models)]
    for name in result["sets"]:
        labels = _labels(name)
        if labels is None:
            continue
        cells = []
        for m in models:
            ap, r1, r2 = _ranking(labels, np.array(result["models"][m]["scores"][name]))
            cells.append(f"{ap:.3f} / {r1:.2f} / {r2:.2f}")
        out.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return out


def _labels(name: str) -> np.ndarray | None:
    from semcache.proxy.judge.pairs import read_pairs
    from semcache.proxy.judge.training.train import read_handwritten

    quora = RESULTS.parents[1].parent / "shared" / "data" / "qqp_dev_pairs.jsonl.gz"
    if name == "handwritten_dev":
        rows = read_handwritten("dev")
    elif name.startswith("qqp_"):
        if not quora.is_file():
            return None
        rows = read_pairs(quora, name.removeprefix("qqp_"))
    else:
        rows = read_pairs(DATA / f"{name}.jsonl")
    return np.array([int(r["label"]) for r in rows])


def cost_table() -> list[str]:
    out = ["| model | machine | per candidate p50 / p95 |", "| --- | --- | --- |"]
    for path in sorted(RESULTS.glob("judge_cost_*.json")):
        result = json.loads(path.read_text())
        m_info = result["machine"]
        machine = m_info.get("gpu") or f"{m_info.get('cpu_count')}-core {m_info.get('cpu_model')}"
        for name, m in result["models"].items():
            for part, t in m.get("per_candidate", {}).items():
                out.append(f"| {name} ({m['model']}), int8 ONNX, `{part}` | {machine} | "
                           f"{t['p50_ms']} / {t['p95_ms']} ms |")
            for batch in ("batch_1", "batch_64"):
                if batch in m:
                    out.append(f"| {name}, torch bf16, {batch.replace('_', ' ')} (random weights) | "
                               f"{machine} | {m[batch]['p50_ms']} / {m[batch]['p95_ms']} ms |")
    return out


def main() -> int:
    print("<!-- generated by `python -m semcache.loadtest.judge_table`: do not edit -->\n")
    print("### The defaults through the judge (`semcache eval`, 2-core CPU)\n")
    print("\n".join(defaults_table()))
    print("\n### The candidates' own ranking (raw scores, 128 tokens, H200)\n")
    print("\n".join(candidates_table()))
    print("\n### Cost of the pair model per candidate\n")
    print("\n".join(cost_table()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
