"""Append-only storage of one scope's vectors.

Rows live in blocks of BLOCK_ROWS (the first block grows by doubling until it is that
large). Appending never moves or overwrites a row that was written, so another thread may
read every row below a count it saw under the scope's lock while the event loop keeps
appending, and growing costs the loop at most one copy of a half-full first block, however
large the scope becomes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BLOCK_ROWS = 8192
"""Rows per block: 12 MB of 384-d float32. The largest copy an append can make is the
first block's last doubling (4096 rows, 6 MB, about a millisecond); a full block is a
comfortable unit for one matrix-vector product and one FAISS add."""
FIRST_ROWS = 16
"""Capacity of a new scope's first block: most scopes stay small."""


class Rows:
    def __init__(self, dim: int, capacity: int = FIRST_ROWS) -> None:
        self.dim = dim
        self.blocks: list[np.ndarray] = [
            np.empty((min(max(capacity, 1), BLOCK_ROWS), dim), dtype=np.float32)]
        self.count = 0

    def snapshot(self) -> list[np.ndarray]:
        """The blocks as they are now: with `count`, enough to read every written row later."""
        return list(self.blocks)

    def append(self, vector: np.ndarray) -> int:
        row = self.count
        block = self._room()
        block[row % BLOCK_ROWS] = vector
        self.count = row + 1
        return row

    def extend(self, vectors: np.ndarray) -> int:
        """Append many rows; returns the first one's number."""
        first, done = self.count, 0
        while done < len(vectors):
            block = self._room()
            at = self.count % BLOCK_ROWS
            take = min(len(vectors) - done, len(block) - at)
            block[at : at + take] = vectors[done : done + take]
            self.count += take
            done += take
        return first

    def _room(self) -> np.ndarray:
        """The block the next row goes into, grown or added if the last one is full."""
        last = self.blocks[-1]
        used = self.count - (len(self.blocks) - 1) * BLOCK_ROWS
        if used < len(last):
            return last
        if len(last) < BLOCK_ROWS:  # only the first block is ever smaller
            grown = np.empty((min(len(last) * 2, BLOCK_ROWS), self.dim), dtype=np.float32)
            grown[:used] = last[:used]
            self.blocks[-1] = grown
            return grown
        block = np.empty((BLOCK_ROWS, self.dim), dtype=np.float32)
        self.blocks.append(block)
        return block


def slices(blocks: list[np.ndarray], start: int, stop: int,
           step: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, view of rows) covering rows [start, stop) of a snapshot, at most `step`
    rows each and never across a block."""
    row = start
    while row < stop:
        block, at = divmod(row, BLOCK_ROWS)
        take = min(stop - row, BLOCK_ROWS - at, step)
        yield row, blocks[block][at : at + take]
        row += take


def take(blocks: list[np.ndarray], rows: np.ndarray, dim: int) -> np.ndarray:
    """A copy of the given rows (sorted ascending) of a snapshot."""
    out = np.empty((len(rows), dim), dtype=np.float32)
    if not len(rows):
        return out
    which = rows // BLOCK_ROWS
    edges = np.flatnonzero(np.diff(which)) + 1
    for part in np.split(np.arange(len(rows)), edges):
        block = int(which[part[0]])
        out[part] = blocks[block][rows[part] - block * BLOCK_ROWS]
    return out
