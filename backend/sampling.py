"""Choosing the next token of each row of a batch: greedy, or temperature and top-p.

Sampling uses the inverse CDF with one uniform number per row, drawn from the sequence's
own generator when it has a seed: a seeded request gets the same tokens whether it ran
alone or among others, because its randomness never depends on its neighbours.
"""

from __future__ import annotations

import torch


def sample(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ps: list[float],
    uniforms: list[float],
) -> list[int]:
    """Next token per row of float32 logits [rows, vocab]. A row with temperature 0 is
    greedy (its uniform is ignored)."""
    greedy = logits.argmax(dim=-1)
    sampled_rows = [i for i, t in enumerate(temperatures) if t > 0]
    if not sampled_rows:
        return greedy.tolist()
    device = logits.device
    index = torch.tensor(sampled_rows, device=device)
    temps = torch.tensor([temperatures[i] for i in sampled_rows], device=device)
    probs = torch.softmax(logits[index] / temps[:, None], dim=-1)
    tops = [top_ps[i] for i in sampled_rows]
    u = torch.tensor([uniforms[i] for i in sampled_rows], device=device, dtype=probs.dtype)
    if min(tops) < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        cumulative = probs.cumsum(dim=-1)
        top = torch.tensor(tops, device=device, dtype=probs.dtype)
        # Keep the smallest prefix whose mass reaches top_p; the most likely token always
        # stays (its preceding mass is 0), so top_p = 0 is greedy.
        probs = probs.masked_fill(cumulative - probs > top[:, None], 0.0)
    else:
        order = None
    cumulative = probs.cumsum(dim=-1)
    target = u[:, None] * cumulative[:, -1:]
    choice = torch.searchsorted(cumulative, target).clamp_(max=probs.shape[-1] - 1)
    if order is not None:
        choice = order.gather(1, choice)
    tokens = greedy.tolist()
    for row, token in zip(sampled_rows, choice[:, 0].tolist(), strict=True):
        tokens[row] = token
    return tokens


def probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution `sample` draws from for these settings, in vocabulary order:
    float32 logits [rows, vocab] -> probabilities [rows, vocab] (temperature > 0)."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs > top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs / probs.sum(dim=-1, keepdim=True)


def inverse_cdf(probs: torch.Tensor, u: float) -> int:
    """The token whose cumulative mass first reaches u * total, for one row [vocab]."""
    cumulative = probs.cumsum(dim=-1)
    index = torch.searchsorted(cumulative, u * cumulative[-1:])
    return int(index.clamp_(max=probs.shape[-1] - 1))
