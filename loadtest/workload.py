"""A workload from the Quora development pairs: what a cache sees in production, in small.

Each request is one of:
- `repeat`: a question from a pool of popular ones, drawn with a Zipf distribution (a few
  questions are asked very often, most rarely), so after its first time it is an exact hit;
- `paraphrase`: the other side of a popular question's duplicate pair (label 1), a hit only
  for a semantic tier;
- `unique`: a question asked once, always a miss.
Requests are spread over several tenants (API keys), and a fraction of them stream.
Deterministic for a given seed, so two runs (or two replicas' runs) see the same sequence.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .loadgen import WorkItem

DATA_CANDIDATES = ("../shared/data/qqp_dev_pairs.jsonl.gz",
                   "/work/shared/data/qqp_dev_pairs.jsonl.gz",
                   ".benchdata/qqp_dev_pairs.jsonl.gz")
CHAT_PATH = "/v1/chat/completions"


class WorkloadError(Exception):
    """The workload cannot be built (no data file, too few pairs)."""


@dataclass(frozen=True, kw_only=True)
class WorkloadSpec:
    pool: int = 1000
    """Popular questions (each with a paraphrase) that repeats and paraphrases draw from."""
    zipf_s: float = 1.0
    """Zipf exponent over the pool; 0 draws uniformly (every popular question alike)."""
    repeat_fraction: float = 0.6
    paraphrase_fraction: float = 0.2
    """The rest of the requests (1 - repeat - paraphrase) are unique questions."""
    tenants: int = 4
    """Distinct API keys; each tenant's cache is its own, so repeats hit per tenant."""
    stream_fraction: float = 0.3
    model: str = "fake-model"
    max_tokens: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Pairs:
    duplicates: list[tuple[str, str]]
    """(question, paraphrase) pairs labelled 1."""
    others: list[str]
    """Questions of no duplicate pair, for the unique requests."""


def find_data(path: str | Path | None = None) -> Path:
    candidates = [str(path)] if path else list(DATA_CANDIDATES)
    found = next((Path(p) for p in candidates if p and Path(p).is_file()), None)
    if found is None:
        raise WorkloadError(f"no pairs file among {candidates}")
    return found


def load_pairs(path: str | Path | None = None) -> Pairs:
    duplicates: list[tuple[str, str]] = []
    seen: set[str] = set()
    others: dict[str, None] = {}
    with gzip.open(find_data(path), "rt", encoding="utf-8") as fh:
        for line in fh:
            pair = json.loads(line)
            a, b = pair["a"].strip(), pair["b"].strip()
            if not a or not b or a == b:
                continue
            if pair["label"] == 1 and a not in seen and b not in seen:
                duplicates.append((a, b))
                seen.update((a, b))
            else:
                others.setdefault(a, None)
                others.setdefault(b, None)
    return Pairs(duplicates, [q for q in others if q not in seen])


def chat_body(question: str, *, model: str, stream: bool, max_tokens: int) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": question}],
                            "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def tenant_key(i: int) -> str:
    return f"sk-loadtest-tenant-{i:03d}"


class Workload:
    """An endless, deterministic sequence of `WorkItem`s (bound it with the load generator)."""

    def __init__(self, spec: WorkloadSpec, pairs: Pairs) -> None:
        if spec.pool > len(pairs.duplicates):
            raise WorkloadError(f"pool {spec.pool} > {len(pairs.duplicates)} duplicate pairs")
        if not 0 <= spec.repeat_fraction + spec.paraphrase_fraction <= 1:
            raise WorkloadError("repeat_fraction + paraphrase_fraction must be within [0, 1]")
        self.spec = spec
        self.popular = pairs.duplicates[: spec.pool]
        self.unique = pairs.others
        ranks = np.arange(1, spec.pool + 1, dtype=np.float64)
        weights = ranks ** -spec.zipf_s
        self.probabilities = weights / weights.sum()

    def item(self, question: str, *, tenant: int, stream: bool, kind: str) -> WorkItem:
        s = self.spec
        return WorkItem(
            path=CHAT_PATH,
            body=chat_body(question, model=s.model, stream=stream, max_tokens=s.max_tokens),
            headers={"Authorization": f"Bearer {tenant_key(tenant)}",
                     "Content-Type": "application/json"},
            stream=stream, kind=kind,
        )

    def items(self) -> Iterator[WorkItem]:
        s = self.spec
        rng = np.random.default_rng(s.seed)
        unique_i = 0
        while True:
            # Draw in blocks: one numpy call per 1024 requests instead of four per request.
            n = 1024
            kinds, ranks = rng.random(n), rng.choice(s.pool, size=n, p=self.probabilities)
            tenants, streams = rng.integers(0, s.tenants, size=n), rng.random(n) < s.stream_fraction
            for k, rank, tenant, stream in zip(kinds, ranks, tenants, streams, strict=True):
                if k < s.repeat_fraction:
                    kind, question = "repeat", self.popular[rank][0]
                elif k < s.repeat_fraction + s.paraphrase_fraction:
                    kind, question = "paraphrase", self.popular[rank][1]
                else:
                    kind = "unique"
                    question = self.unique[unique_i % len(self.unique)]
                    if unique_i >= len(self.unique):  # past the data: still never repeated
                        question = f"{question} (#{unique_i // len(self.unique)})"
                    unique_i += 1
                yield self.item(question, tenant=int(tenant), stream=bool(stream), kind=kind)

    def warmup_items(self, *, stream: bool = False) -> Iterator[WorkItem]:
        """Each popular question once per tenant: afterwards every repeat is an exact hit."""
        for tenant in range(self.spec.tenants):
            for question, _ in self.popular:
                yield self.item(question, tenant=tenant, stream=stream, kind="warmup")

    def describe(self) -> dict[str, Any]:
        return {"source": "qqp_dev_pairs", **asdict(self.spec),
                "unique_questions_available": len(self.unique)}


def add_workload_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload")
    d = WorkloadSpec()
    g.add_argument("--data", help="pairs file (default: the shared qqp_dev_pairs.jsonl.gz)")
    g.add_argument("--pool", type=int, default=d.pool)
    g.add_argument("--zipf", type=float, default=d.zipf_s)
    g.add_argument("--repeat", type=float, default=d.repeat_fraction)
    g.add_argument("--paraphrase", type=float, default=d.paraphrase_fraction)
    g.add_argument("--tenants", type=int, default=d.tenants)
    g.add_argument("--stream", type=float, default=d.stream_fraction, help="streaming fraction")
    g.add_argument("--model", default=d.model)
    g.add_argument("--seed", type=int, default=d.seed)


def workload_from_args(args: argparse.Namespace) -> Workload:
    spec = WorkloadSpec(pool=args.pool, zipf_s=args.zipf, repeat_fraction=args.repeat,
                        paraphrase_fraction=args.paraphrase, tenants=args.tenants,
                        stream_fraction=args.stream, model=args.model, seed=args.seed)
    return Workload(spec, load_pairs(args.data))
