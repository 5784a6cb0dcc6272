"""Speculative decoding: where drafts come from, and the rule that keeps or rejects them.

A verifying step feeds each sequence its newest token followed by up to k drafted tokens,
and gets the target model's logits at every one of those positions from one forward pass
(runner.verify). Drafts are kept up to the first one the target rejects, and the target's
own token at that position is kept too, so a step yields between 1 and k + 1 tokens for
the price of about one decoding step while the model is bound by memory or launches.

Two sources of drafts:
- prompt lookup (`NgramDrafter`): where the sequence's last n tokens occurred before, in
  the prompt or in its own answer, the tokens that followed them there. Free to make, and
  right wherever a model copies: summaries, edits, code changes, quotes, repeated lists.
- a draft model (`DraftModel`): a smaller model with the same tokenizer drafts k tokens
  one at a time.

The acceptance rule is speculative sampling's (Leviathan et al. 2023; Chen et al. 2023):
keep draft x with probability min(1, p(x) / q(x)), where p is the target's distribution
and q the drafter's; on a rejection emit a token drawn from max(0, p - q), renormalised.
The emitted tokens are then distributed exactly as the target's own samples. A draft that
is not sampled (prompt lookup, or a draft model's greedy pick) has q = 1 on its token, so
the rule reduces to: keep x with probability p(x), else draw from p without x. That is
`accept_exact`: the target's token is drawn as plain decoding would draw it, with the same
random number, and x is kept when it is that token. Greedy rows and seeded rows then get
the same tokens with speculation as without it, only in fewer steps.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from .sampling import inverse_cdf, probabilities

if TYPE_CHECKING:
    from .runner import ModelRunner
    from .sequence import Sequence


class NgramDrafter:
    """Prompt lookup for one sequence: an index from each n-gram of its tokens to where
    it last ended, kept current as tokens are added (a step costs a few dictionary
    operations, not a scan of the whole context)."""

    def __init__(self, tokens: Seq[int], sizes: Seq[int]) -> None:
        self.tokens: list[int] = []
        # Longest n first: a longer match is more specific, so its continuation is likelier.
        self._seen: dict[int, dict[tuple[int, ...], int]] = {
            n: {} for n in sorted(set(sizes), reverse=True)}
        self.extend(tokens)

    def extend(self, new: Seq[int]) -> None:
        start = len(self.tokens)
        self.tokens.extend(new)
        for n, seen in self._seen.items():
            # Index the n-grams that now have a following token: tokens[f-n:f] -> f. The
            # sequence's own final n-gram has none yet, so a look-up finds only earlier
            # occurrences; later ones overwrite earlier ones (the most recent is kept).
            for f in range(max(n, start), len(self.tokens)):
                seen[tuple(self.tokens[f - n : f])] = f

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest suffix
        (of the configured sizes) that occurred before; [] if none did."""
        if k < 1:
            return []
        end = len(self.tokens)
        for n, seen in self._seen.items():
            if end > n:
                follower = seen.get(tuple(self.tokens[end - n :]))
                if follower is not None:
                    return self.tokens[follower : follower + k]
        return []


def accept_exact(targets: Seq[int], draft: Seq[int]) -> list[int]:
    """The tokens a step yields for a draft with q = 1 on each of its tokens.

    targets[j] is the token the target samples (or picks, greedy) at draft position j with
    that position's own random number, for j = 0..len(draft). Drafts are kept while they
    equal the target's tokens; then the target's token follows (after a full match it is
    the bonus token from the last position)."""
    n = 0
    while n < len(draft) and draft[n] == targets[n]:
        n += 1
    return list(targets[: n + 1])


def accept_sampled(logits: torch.Tensor, q: torch.Tensor, draft: Seq[int],
                   seq: Sequence) -> list[int]:
    """The tokens a step yields for a draft sampled from distributions q [len(draft), vocab]
    (a draft model at temperature > 0), with the target's float32 logits
    [len(draft) + 1, vocab]; the random numbers come from the sequence's own stream."""
    params = seq.params
    p = probabilities(logits, params.temperature, params.top_p)
    picked = torch.arange(len(draft), device=p.device)
    index = torch.tensor(list(draft), device=p.device)
    p_x, q_x = p[picked, index].tolist(), q[picked, index].tolist()
    for j in range(len(draft)):
        # Keep draft j with probability min(1, p / q); q > 0, since it was drawn from q.
        if draw(seq) * q_x[j] < p_x[j]:
            continue
        residual = (p[j] - q[j]).clamp_(min=0.0)
        if float(residual.sum()) <= 0.0:  # p == q up to rounding: p itself is the residual
            residual = p[j]
        return [*draft[:j], inverse_cdf(residual, draw(seq))]
    return [*draft, inverse_cdf(p[len(draft)], draw(seq))]


def draw(seq: Sequence) -> float:
    """The next number of the sequence's random stream, consumed."""
    u = seq.uniforms(1)[0]
    seq.consume(1)
    return u


class DraftModel:
    """A smaller model of the same tokenizer that drafts k tokens per sequence and step.

    Its own runner keeps a cache in step with the target's: the same slots, the same
    positions. It is prefilled with each prompt at admission, and each round it is fed
    k + 1 tokens, the newest token and its k drafts; the last one only so that its KV is
    in place when every draft is accepted, which leaves every round starting from exactly
    one new token (the one the target chose), so each feed is a single-token decoding step
    that CUDA graphs cover. Rejected drafts' KV is left past the sequence's length, exactly
    as in the target's cache."""

    def __init__(self, runner: ModelRunner, k: int) -> None:
        self.runner, self.k = runner, k

    def prefill(self, first_slot: int, prompts: list[list[int]]) -> None:
        self.runner.prefill(first_slot, prompts)

    def propose(self, seqs: list[Sequence]) -> tuple[list[list[int]], list[torch.Tensor | None]]:
        """k drafts per sequence in slots 0..len(seqs)-1, and for sampled sequences the
        draft distributions they were drawn from ([k, vocab]; None for greedy ones)."""
        tokens = [s.generated[-1] for s in seqs]
        start = [s.next_position for s in seqs]
        drafts: list[list[int]] = [[] for _ in seqs]
        dists: list[list[torch.Tensor]] = [[] for _ in seqs]
        sampled = [i for i, s in enumerate(seqs) if s.params.temperature > 0]
        for step in range(self.k + 1):
            logits = self.runner.decode(tokens, [p + step for p in start])
            if step == self.k:
                break
            tokens = logits.argmax(dim=-1).tolist()
            for i in sampled:
                params = seqs[i].params
                q = probabilities(logits[i : i + 1], params.temperature, params.top_p)[0]
                tokens[i] = inverse_cdf(q, draw(seqs[i]))
                dists[i].append(q)
            for draft, token in zip(drafts, tokens, strict=True):
                draft.append(token)
        return drafts, [torch.stack(d) if d else None for d in dists]
