"""The model stages of an engine step: admission with cached prefixes, drafting,
verification and acceptance.

Only the engine's worker thread calls a Decoder; it holds no locks and starts no threads.
Each stage takes the sequences it works on and returns the tokens they gain; the engine
(engine.py) decides who runs, appends the tokens, finishes and retires sequences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .prefix_cache import BLOCK_TOKENS, PrefixCache, chain_keys
from .runner import ModelRunner
from .sampling import sample
from .sequence import Sequence
from .speculative import DraftModel, NgramDrafter, accept_exact, accept_sampled

SPECULATION_MODES = ("ngram", "model", "off")


def _constrained(seq: Sequence, logits: torch.Tensor, uniform: float) -> int:
    return int(seq.constraint.choose(logits, seq.params.temperature, seq.params.top_p,
                                      uniform))


def _mark(seqs: list[Sequence], name: str) -> None:
    now = time.perf_counter()
    for seq in seqs:
        seq.marks[name] = now


@dataclass(frozen=True, kw_only=True)
class Speculation:
    """How a Decoder drafts (see speculative.py)."""

    mode: str = "off"
    """`ngram` (prompt lookup), `model` (a draft model) or `off`."""
    tokens: int = 0
    """Most drafts verified per sequence and step."""
    ngram_sizes: tuple[int, ...] = (3, 2)
    """Suffix lengths prompt lookup tries, longest first."""
    step_tokens: int = 0
    """Most tokens (rows x width) one verifying step may feed, 0: no bound. Prompt-lookup
    drafts are shortened (or skipped) to fit, so that on a compute-bound device a large
    batch does not pay k + 1 times its decoding cost for drafts that are mostly rejected.
    Shortening never changes a sequence's tokens (accept_exact), only its step count."""


class Decoder:
    """Prefill, decode and verify over one runner, with an optional prefix cache and
    drafter. Counters are plain ints, read (not locked) by Engine.stats."""

    def __init__(self, runner: ModelRunner, *, prefix_cache: PrefixCache | None = None,
                 speculation: Speculation | None = None,
                 draft: DraftModel | None = None) -> None:
        self.runner = runner
        self.prefix = prefix_cache
        self.spec = speculation or Speculation()
        if self.spec.mode not in SPECULATION_MODES:
            raise ValueError(f"speculation must be one of {SPECULATION_MODES}")
        if (self.spec.mode == "model") != (draft is not None):
            raise ValueError("a draft model is needed exactly when speculation is 'model'")
        if self.spec.mode != "off" and not 1 <= self.spec.tokens <= runner.max_draft:
            raise ValueError(f"speculative tokens must be 1..{runner.max_draft} (the runner's "
                             f"max_draft), not {self.spec.tokens}")
        self.draft = draft
        self.prefill_tokens = 0
        """Prompt tokens run through the model."""
        self.cached_tokens = 0
        """Prompt tokens whose KV was copied from the prefix cache instead (prefill saved)."""
        self.prefix_hits = 0
        """Sequences that found at least one block of their prompt cached."""
        self.decode_steps = 0
        self.verify_steps = 0
        self.drafted = 0
        """Draft tokens verified."""
        self.accepted = 0
        """Draft tokens kept."""

    # ---- admission --------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> int:
        """Find the cached part of a waiting sequence's prompt; returns how many prompt
        tokens are left to prefill. The match holds until `prefill`, as only prefill and
        release change the cache and both run on the worker after admission."""
        if self.prefix is None:
            return len(seq.prompt)
        if not seq.block_keys:
            seq.block_keys = chain_keys(seq.prompt, len(seq.prompt))
        seq.prefix_blocks = self.prefix.match(seq.block_keys)
        # At least the last prompt token is always run: its logits choose the first token.
        seq.cached = min(len(seq.prefix_blocks) * BLOCK_TOKENS, len(seq.prompt) - 1)
        return len(seq.prompt) - seq.cached

    def first_new_block(self, seq: Sequence) -> bytes | None:
        """Key of the first prompt block this sequence will add to the prefix cache: two
        sequences with the same one share an uncached prefix, and the second is better off
        admitted a step later, when it will find that prefix cached."""
        done = len(seq.prefix_blocks)
        return seq.block_keys[done] if done < len(seq.block_keys) else None

    def prefill(self, seqs: list[Sequence], first_slot: int) -> list[list[int]]:
        """Fill the slots first_slot.. with the sequences' prompts; returns each one's
        first token. What only later steps need (index_prompts) is left out, so that the
        first token leaves as soon as it is chosen."""
        for i, seq in enumerate(seqs):
            self.runner.load_prefix(first_slot + i, seq.prefix_blocks)
        _mark(seqs, "prefix_loaded")
        logits = self.runner.prefill(first_slot, [s.prompt[s.cached :] for s in seqs],
                                     [s.cached for s in seqs])
        _mark(seqs, "prefilled")
        if self.draft is not None:
            self.draft.prefill(first_slot, [s.prompt for s in seqs])
        for seq in seqs:
            self.prefill_tokens += len(seq.prompt) - seq.cached
            self.cached_tokens += seq.cached
            self.prefix_hits += seq.cached > 0
            seq.prefix_blocks = []
        tokens = self._sample(seqs, logits)
        _mark(seqs, "sampled")
        return tokens

    def index_prompts(self, seqs: list[Sequence]) -> None:
        """After prefill, once the first tokens are handed over: put the prompts' blocks in
        the prefix cache (from each one's slot, which may have moved since) and index them
        for prompt lookup. The copy of an uncached 1,000-token prompt's KV and the n-gram
        index are milliseconds that the first token need not wait for. A sequence already
        retired (finished at its first token) kept its blocks in `release`."""
        for seq in seqs:
            if self.prefix is not None:
                self.runner.save_prefix(seq.slot, self.prefix.insert(seq.block_keys))
            if self.spec.mode == "ngram":
                seq.drafter = NgramDrafter(seq.prompt, self.spec.ngram_sizes)

    # ---- steps ------------------------------------------------------------------------

    def step(self, seqs: list[Sequence]) -> list[list[int]]:
        """One step for the sequences in slots 0..len(seqs)-1: the tokens each one gains
        (its newest token is fed; drafts, if any, are verified in the same pass)."""
        drafts, dists = self._drafts(seqs)
        if not any(drafts):
            self.decode_steps += 1
            logits = self.runner.decode([s.generated[-1] for s in seqs],
                                        [s.next_position for s in seqs])
            return self._sample(seqs, logits)
        self.verify_steps += 1
        chunks = [[s.generated[-1], *d] for s, d in zip(seqs, drafts, strict=True)]
        logits = self.runner.verify(chunks, [s.next_position for s in seqs])
        out = self._accept(seqs, drafts, dists, logits)
        self.drafted += sum(len(d) for d in drafts)
        self.accepted += sum(len(o) - 1 for o in out)
        return out

    def _room(self, seq: Sequence) -> int:
        # Drafts never run past max_tokens or the slot: a step's last token is the
        # target's own, so a draft of d tokens can yield d + 1.
        left = seq.params.max_tokens - len(seq.generated) - 1
        return max(0, min(self.spec.tokens, left, self.runner.max_seq_len - 2 - seq.next_position))

    def _drafts(self, seqs: list[Sequence]) -> tuple[list[list[int]], list[torch.Tensor | None]]:
        none: list[torch.Tensor | None] = [None] * len(seqs)
        if self.spec.mode == "off":
            return [[] for _ in seqs], none
        if self.draft is not None:
            # The draft model drafts for every row every step: its cache must see each
            # token, and one round of k + 1 single-token steps is what keeps it in step.
            drafts, dists = self.draft.propose(seqs)
            for i, seq in enumerate(seqs):
                keep = 0 if seq.constraint is not None else self._room(seq)
                drafts[i] = drafts[i][:keep]
                dist = dists[i]
                dists[i] = dist[:keep] if dist is not None and keep else None
            return drafts, dists
        limit = self.spec.tokens
        if self.spec.step_tokens:
            if self.runner.use_graphs:
                # A graphed verifying step feeds the full width per row whatever the drafts'
                # lengths: draft fully within the bound, or not at all.
                fits = len(seqs) * self.runner.widths[-1] <= self.spec.step_tokens
                limit = limit if fits else 0
            else:
                limit = min(limit, self.spec.step_tokens // len(seqs) - 1)
        if limit <= 0:
            # No room for drafts this step: skip the drafters (each catches up on the
            # tokens it missed the next time it drafts), so a full batch pays nothing for
            # speculation it does not use.
            return [[] for _ in seqs], none
        out = []
        for seq in seqs:
            drafter = seq.drafter
            drafter.extend(seq.generated[len(drafter.tokens) - len(seq.prompt) :])
            # A JSON row's every token is chosen under its constraint: no drafts.
            room = 0 if seq.constraint is not None else min(limit, self._room(seq))
            out.append(drafter.propose(room))
        return out, none

    def _accept(self, seqs: list[Sequence], drafts: list[list[int]],
                dists: list[torch.Tensor | None], logits: torch.Tensor) -> list[list[int]]:
        """Kept tokens per row from verify logits [rows, width, vocab]."""
        out: list[list[int]] = [[] for _ in seqs]
        exact = [i for i, d in enumerate(dists) if d is None or not drafts[i]]
        # Rows with deterministic drafts: sample the target's token at every position in
        # one batch, each with that position's own random number, then compare.
        rows: list[int] = []
        cols: list[int] = []
        temps: list[float] = []
        tops: list[float] = []
        uniforms: list[float] = []
        for i in exact:
            n = len(drafts[i]) + 1
            rows += [i] * n
            cols += range(n)
            temps += [seqs[i].params.temperature] * n
            tops += [seqs[i].params.top_p] * n
            uniforms += seqs[i].uniforms(n)
        if exact:
            device = logits.device
            flat = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
            targets = sample(flat, temps, tops, uniforms)
            at = 0
            for i in exact:
                n = len(drafts[i]) + 1
                out[i] = accept_exact(targets[at : at + n], drafts[i])
                if seqs[i].constraint is not None:  # no drafts: n is 1
                    out[i] = [_constrained(seqs[i], logits[i, 0], uniforms[at])]
                seqs[i].consume(len(out[i]))
                at += n
        for i, dist in enumerate(dists):
            if dist is not None and drafts[i]:
                out[i] = accept_sampled(logits[i, : len(drafts[i]) + 1], dist, drafts[i],
                                        seqs[i])
        return out

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[list[int]]:
        uniforms = [s.uniforms(1)[0] for s in seqs]
        tokens = sample(logits, [s.params.temperature for s in seqs],
                        [s.params.top_p for s in seqs], uniforms)
        for i, seq in enumerate(seqs):
            if seq.constraint is not None:
                tokens[i] = _constrained(seq, logits[i], uniforms[i])
            seq.consume(1)
        return [[t] for t in tokens]

    # ---- retirement -------------------------------------------------------------------

    def release(self, seq: Sequence) -> None:
        """Keep a retiring sequence's full blocks (prompt and answer) in the prefix cache,
        for the next turn of its conversation; call before its slot is reused."""
        if self.prefix is None:
            return
        length = seq.next_position  # positions before the newest token hold valid KV
        keys = chain_keys(seq.prompt + seq.generated, length, seq.block_keys)
        self.runner.save_prefix(seq.slot, self.prefix.insert(keys))

    def warmup(self) -> None:
        """Capture the CUDA graphs (of the draft model's runner too) before serving."""
        self.runner.warmup()
        if self.draft is not None:
            self.draft.runner.warmup()

    def move_slot(self, src: int, dst: int, length: int) -> None:
        self.runner.move_slot(src, dst, length)
        if self.draft is not None:
            self.draft.runner.move_slot(src, dst, length)

    def stats(self) -> dict[str, int | float | str]:
        return {
            "prefill_tokens": self.prefill_tokens,
            "prefix_cached_tokens": self.cached_tokens,
            "prefix_hits": self.prefix_hits,
            "prefix_cache_blocks": len(self.prefix) if self.prefix is not None else 0,
            "prefix_cache_evictions": self.prefix.evictions if self.prefix is not None else 0,
            "speculation": self.spec.mode,
            "verify_steps": self.verify_steps,
            "decode_steps": self.decode_steps,
            "draft_tokens": self.drafted,
            "draft_tokens_accepted": self.accepted,
            "draft_acceptance": round(self.accepted / self.drafted, 4) if self.drafted else 0.0,
        }
