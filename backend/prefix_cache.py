"""Which token prefixes have their KV kept, and where: the bookkeeping of prefix caching.

Prompts are cut into blocks of BLOCK_TOKENS tokens. A full block is named by a chain key,
a hash of its tokens and of the key of the block before it, so a key stands for the whole
prefix up to the end of its block: two prompts share a block's key exactly when they share
every token up to there. The KV of such blocks is kept in a pool of fixed size (the
runner's tensors; this module only hands out their indices) and evicted least recently
used first.

A sequence's KV lives in its own slot of the static cache (runner.py), so reuse is a copy:
matched blocks are copied from the pool into the new sequence's slot and only the rest of
the prompt is prefilled. The copy moves the prefix's KV once; prefilling it would run the
whole model over every one of its tokens.

The keys are blake2b digests, not Python hashes: a collision would serve one prompt the KV
of another, so it must be as unlikely as a collision of a cryptographic hash, even for
prompts written to collide.
"""

from __future__ import annotations

import collections
import hashlib
from array import array
from collections.abc import Sequence

BLOCK_TOKENS = 16
"""Tokens per block: small enough that a shared prefix loses little to the block it ends
inside, large enough that a 1,000-token prompt is 62 dictionary look-ups."""


def chain_keys(tokens: Sequence[int], upto: int, known: Sequence[bytes] = ()) -> list[bytes]:
    """Keys of the full blocks of tokens[:upto]; `known` are keys already computed for a
    prefix of the same tokens (a prompt's, when its answer's blocks are added)."""
    keys = list(known[: upto // BLOCK_TOKENS])
    previous = keys[-1] if keys else b""
    for start in range(len(keys) * BLOCK_TOKENS, upto - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        block = array("q", tokens[start : start + BLOCK_TOKENS]).tobytes()
        previous = hashlib.blake2b(previous + block, digest_size=16).digest()
        keys.append(previous)
    return keys


class PrefixCache:
    """An LRU map from chain keys to pool blocks. Used by the engine's worker thread only."""

    def __init__(self, blocks: int) -> None:
        self.capacity = blocks
        self._blocks: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._free = list(range(blocks - 1, -1, -1))
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, keys: Sequence[bytes]) -> list[int]:
        """Pool blocks of the longest cached run of `keys` from the first block; they
        become the most recently used."""
        found = []
        for key in keys:
            block = self._blocks.get(key)
            if block is None:
                break
            self._blocks.move_to_end(key)
            found.append(block)
        return found

    def insert(self, keys: Sequence[bytes]) -> list[tuple[int, int]]:
        """Make room for every block of `keys` that is not cached yet; returns the
        (block index in the sequence, pool block) pairs whose KV the caller must now copy in.

        Blocks of this same chain are never evicted to make room for its later ones (a pool
        smaller than one prompt keeps the prompt's beginning, which is what a match needs)."""
        mine = set(keys)
        placed: list[tuple[int, int]] = []
        for i, key in enumerate(keys):
            if key in self._blocks:
                self._blocks.move_to_end(key)
                continue
            if not self._free:
                oldest = next(iter(self._blocks), None)
                if oldest is None or oldest in mine:
                    break
                self._free.append(self._blocks.pop(oldest))
                self.evictions += 1
            block = self._free.pop()
            self._blocks[key] = block
            placed.append((i, block))
        return placed
