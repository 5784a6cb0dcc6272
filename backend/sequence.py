"""One sequence's state as the engine and the model stages see it (no threads in here)."""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """What one sequence asks of the decoder."""

    max_tokens: int
    """Most tokens to generate (clipped to the slot's room)."""
    temperature: float = 1.0
    """0 is greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    seed: int | None = None
    """Fixes the sequence's own random stream, independent of its batch neighbours."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks want fixed lengths)."""


@dataclass(frozen=True)
class TokenEvent:
    """One step's news for a sequence: the tokens it gained (several when drafts were
    accepted, none when it only finished or failed) and/or why it finished."""

    tokens: tuple[int, ...]
    finish_reason: str | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class Sequence:
    """A prompt being completed; lives in `waiting`, then in a slot, then is retired."""

    id: int
    prompt: list[int]
    params: SamplingParams
    sink: Callable[[TokenEvent], None]
    rng: random.Random
    generated: list[int] = field(default_factory=list)
    slot: int = -1
    finish_reason: str | None = None
    cancelled: bool = False
    admitted_step: int = -1
    finished_step: int = -1
    cached: int = 0
    """Prompt tokens whose KV came from the prefix cache instead of being prefilled."""
    prefix_blocks: list[int] = field(default_factory=list)
    """Prefix-cache blocks matched at admission, copied into the slot before prefill."""
    block_keys: list[bytes] = field(default_factory=list)
    """Chain keys of the prompt's full blocks (see prefix_cache.py), computed once."""
    drafter: Any = None
    constraint: Any = None
    """A json_mode.JsonConstraint when the answer must be a JSON object."""
    marks: dict[str, float] = field(default_factory=dict)
    """perf_counter stamps of the way to the first token (timing.py), shared with the
    request that submitted the sequence."""
    """The n-gram index of this sequence's tokens when prompt-lookup speculation is on."""
    _uniforms: collections.deque[float] = field(default_factory=collections.deque)

    @property
    def next_position(self) -> int:
        """Cache position of the newest token, the one the next step feeds. Every earlier
        position holds valid KV; later ones may hold rejected drafts' KV, which the masks
        never read and the next tokens overwrite."""
        return len(self.prompt) + len(self.generated) - 1

    def uniforms(self, n: int) -> list[float]:
        """The next n numbers of this sequence's random stream, without consuming them.

        Token i of a sequence is always sampled with the i-th number of its stream, so a
        verifying step that tries several positions and keeps only some of them leaves the
        rest for the positions' next attempt: speculation then changes how many steps a
        seeded answer takes, never which tokens it gets."""
        while len(self._uniforms) < n:
            self._uniforms.append(self.rng.random())
        return list(itertools.islice(self._uniforms, n))

    def consume(self, n: int) -> None:
        """Mark the first n peeked numbers used (one per token kept)."""
        for _ in range(min(n, len(self._uniforms))):
            self._uniforms.popleft()

