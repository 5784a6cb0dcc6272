"""The model step: prefill, decoding and draft verification over a static, slotted KV cache.

The runner owns the KV cache: one preallocated tensor per K and V of shape
[layers, slots, kv_heads, cache_len, head_dim]. A sequence holds one slot for its whole
life, and its tokens sit at their positions in that slot, so a sequence joining or leaving
never touches (or recomputes) anyone else's cache. The engine keeps the active sequences in
slots 0..B-1 (it moves the last one into a freed hole), so a step is one batch of B rows
that read their own slots through a per-row position mask.

Every step is the same computation: row r feeds W tokens at consecutive positions from
`start[r]`, writes their K/V at those positions, and attends to its slot's cache up to
each query's own position. Decoding is W = 1; verifying speculative drafts is W = 1 + the
draft length, and the logits of every position come back; prefill is W = the prompt, or
only the part of it after a prefix whose KV was copied in from the prefix pool. Because a
query reads only positions up to its own, rolling back rejected drafts costs nothing: the
sequence's length is simply set back, and the stale K/V past it is never read before the
next tokens overwrite it. The cache is `max_draft` positions longer than max_seq_len so
that the padding queries of a short draft in a wide step land in room no real token uses.

The forward pass is written here over the Hugging Face module's own submodules (projections,
norms, MLP, rotary embedding), because the library's cache objects assume one position per
batch; this supports the Llama family's layout (Llama, SmolLM, Mistral, Qwen2/3).
On CUDA, decoding and verifying steps are captured as CUDA graphs, one per (batch, length,
width) bucket: for a small model the step is otherwise all Python and kernel-launch overhead.

Only the engine's worker thread calls a runner.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .errors import ModelLoadError
from .prefix_cache import BLOCK_TOKENS

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [R, H, q, D]; cos/sin: [R, q, D]
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


def _buckets(limit: int, first: int) -> list[int]:
    sizes, n = [], first
    while n < limit:
        sizes.append(n)
        n *= 2
    return sizes + [limit]


class ModelRunner:
    """Prefill, decode and verify steps of one causal LM over a slotted static KV cache."""

    def __init__(
        self, model: Any, *, slots: int, max_seq_len: int, cuda_graphs: bool = True,
        max_draft: int = 0, prefix_blocks: int = 0, verifies: bool = True,
    ) -> None:
        self.model = model
        cfg = model.config
        # The forward pass below is exactly these architectures' (pre-norm decoder, RoPE,
        # gated MLP, no embedding scaling or logit soft-capping); others that share their
        # module names (Gemma, Granite, ...) differ in small ways that would go unnoticed.
        if getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(
                f"unsupported architecture {getattr(cfg, 'model_type', type(model).__name__)!r}:"
                f" the backend serves {', '.join(sorted(SUPPORTED_MODEL_TYPES))} models")
        inner = model.model
        self.layers = list(inner.layers)
        if getattr(inner, "rotary_emb", None) is None:
            raise ModelLoadError("this transformers version keeps rotary embeddings per layer;"
                                 " the backend needs transformers >= 4.45")
        window = getattr(cfg, "sliding_window", None)
        if window and getattr(cfg, "use_sliding_window", True) and window < max_seq_len:
            raise ModelLoadError(f"sliding-window attention ({window}) is not supported; "
                                 f"set backend.max_seq_len <= {window}")
        self.embed, self.norm, self.lm_head = inner.embed_tokens, inner.norm, model.lm_head
        self.rotary = inner.rotary_emb
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scale = getattr(self.layers[0].self_attn, "scaling", None) or self.head_dim**-0.5
        self.slots, self.max_seq_len, self.max_draft = slots, max_seq_len, max_draft
        # Room past max_seq_len for the padding queries of a verifying step, rounded to 64
        # so that every length bucket keeps the attention mask aligned for the fused kernels.
        self.cache_len = -(-(max_seq_len + max_draft) // 64) * 64
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        shape = (len(self.layers), slots, self.kv_heads, self.cache_len, self.head_dim)
        self.k_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        # The prefix pool: [layers, kv_heads, blocks * BLOCK_TOKENS, head_dim], so a run of
        # blocks is one gather of positions (see prefix_cache.py for which block is which).
        pool = (len(self.layers), self.kv_heads, prefix_blocks * BLOCK_TOKENS, self.head_dim)
        self.k_pool = torch.zeros(pool, device=self.device, dtype=self.dtype)
        self.v_pool = torch.zeros(pool, device=self.device, dtype=self.dtype)
        self.vocab_size = self.lm_head.out_features
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self.batch_buckets = _buckets(slots, 1)
        self.len_buckets = _buckets(self.cache_len, min(128, self.cache_len))
        # Step widths that get graphs: decoding, and verifying (not for a draft model's
        # runner, which only decodes but needs the same spare room).
        self.widths = (1, 1 + max_draft) if max_draft and verifies else (1,)
        self._graphs: dict[tuple[int, int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: Any = None
        # Static inputs of the captured graphs (the eager path uses them too).
        self._tokens = torch.zeros(slots, self.widths[-1], dtype=torch.long, device=self.device)
        self._positions = torch.zeros(slots, self.widths[-1], dtype=torch.long,
                                      device=self.device)

    # ---- the layers -------------------------------------------------------------------

    def _attention(self, layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   store: Any, idx: int) -> torch.Tensor:
        attn = layer.self_attn
        rows, q_len, _ = x.shape
        q = attn.q_proj(x).view(rows, q_len, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(rows, q_len, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(rows, q_len, self.kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(attn, "q_norm"):  # Qwen3 normalises queries and keys per head
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        keys, values, mask = store(idx, k, v)
        groups = self.heads // self.kv_heads
        # Grouped-query attention: fold each KV head's query heads into the query axis, so
        # attention reads each cached key once instead of expanding the cache `groups` times
        # (query head h uses KV head h // groups; the mask is tiled to match).
        q = q.reshape(rows, self.kv_heads, groups * q_len, self.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
        out = out.reshape(rows, self.heads, q_len, self.head_dim)
        return attn.o_proj(out.transpose(1, 2).reshape(rows, q_len, -1))

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, store: Any) -> torch.Tensor:
        h = self.embed(ids)
        cos, sin = self.rotary(h, positions)
        for idx, layer in enumerate(self.layers):
            h = h + self._attention(layer, layer.input_layernorm(h), cos, sin, store, idx)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h

    def _rows(self, first: int, ids: torch.Tensor, positions: torch.Tensor,
              kv_len: int) -> torch.Tensor:
        """Hidden states [rows, width, hidden] of rows feeding ids[r, j] at positions[r, j]
        into slots first.. (graph-capturable: no host syncs, shapes fixed by the arguments)."""
        rows, width = ids.shape
        keys_pos = torch.arange(kv_len, device=self.device)
        mask = (keys_pos[None, None, :] <= positions[:, :, None])[:, None]  # [rows,1,width,kv]
        groups = self.heads // self.kv_heads
        if width > 1 and groups > 1:
            mask = mask.repeat(1, 1, groups, 1)
        slot_ids = torch.arange(first, first + rows, device=self.device)[:, None]

        def store(idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple:
            self.k_cache[idx, slot_ids, :, positions] = k.transpose(1, 2)
            self.v_cache[idx, slot_ids, :, positions] = v.transpose(1, 2)
            return (self.k_cache[idx, first : first + rows, :, :kv_len],
                    self.v_cache[idx, first : first + rows, :, :kv_len], mask)

        return self._layers(ids, positions, store)

    def _kv_len(self, need: int) -> int:
        # Attention reads only as far as the longest row needs, rounded up to 64 so that the
        # kernels see few distinct shapes.
        return min(self.cache_len, -(-need // 64) * 64)

    # ---- prefill ----------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, first_slot: int, prompts: list[list[int]],
                starts: list[int] | None = None) -> torch.Tensor:
        """Feed prompts[i] from position starts[i] (0, or the length of a prefix already in
        the slot) for the sequence in slot first_slot + i, filling its cache.

        Prompts are right-padded to the longest; a padding query writes its K/V past its
        row's last real position (clamped into the spare room at the end of the cache),
        where no real query looks. Returns float32 logits of each prompt's last position,
        [len(prompts), vocab]."""
        starts = starts or [0] * len(prompts)
        rows, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros(rows, width, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        begin = torch.tensor(starts, dtype=torch.long)
        positions = (begin[:, None] + torch.arange(width)).clamp_(max=self.cache_len - 1)
        need = max(s + len(p) for s, p in zip(starts, prompts, strict=True))
        h = self._rows(first_slot, ids.to(self.device), positions.to(self.device),
                       self._kv_len(need))
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        h = h[torch.arange(rows, device=self.device), last]
        return self.lm_head(self.norm(h)).float()

    # ---- decode and verify ------------------------------------------------------------

    def _run_static(self, rows: int, width: int, kv_len: int) -> torch.Tensor:
        """One step of slots 0..rows-1 reading the static input buffers: the graph body.
        Returns float32 logits [rows, width, vocab]."""
        h = self._rows(0, self._tokens[:rows, :width], self._positions[:rows, :width], kv_len)
        return self.lm_head(self.norm(h)).float()

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Feed tokens[i] at positions[i] for the sequence in slot i (i < len(tokens)).

        Returns float32 logits [len(tokens), vocab]."""
        return self._step([[t] for t in tokens], positions, 1)[:, 0]

    @torch.inference_mode()
    def verify(self, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed chunks[i] (the newest token, then its drafts) at positions starts[i].. for
        the sequence in slot i, in one pass. Returns float32 logits [rows, width, vocab],
        where width >= the longest chunk; row i's logits past len(chunks[i]) are padding."""
        longest = max(len(c) for c in chunks)
        if longest > self.widths[-1]:
            raise ValueError(f"a chunk of {longest} tokens exceeds max_draft + 1")
        width = self.widths[-1] if self.use_graphs else longest
        return self._step(chunks, starts, width)

    def _step(self, chunks: list[list[int]], starts: list[int], width: int) -> torch.Tensor:
        rows = len(chunks)
        need = max(starts) + width
        # Padding queries continue their row's positions; the cache's spare room holds them.
        padded = [c + [0] * (width - len(c)) for c in chunks]
        spans = [[min(s + j, self.cache_len - 1) for j in range(width)] for s in starts]
        if not self.use_graphs:
            self._tokens[:rows, :width] = torch.tensor(padded)
            self._positions[:rows, :width] = torch.tensor(spans)
            return self._run_static(rows, width, self._kv_len(need))
        batch = next(b for b in self.batch_buckets if b >= rows)
        kv_len = next(n for n in self.len_buckets if n >= need)
        # Padding rows write at the first positions of free slots: harmless, since a
        # sequence that later takes such a slot fills it (prefix copy, prefill) first.
        padded += [[0] * width] * (batch - rows)
        spans += [list(range(width))] * (batch - rows)
        graph, out = self._graph(batch, kv_len, width)  # before filling the inputs it uses
        self._tokens[:batch, :width].copy_(torch.tensor(padded))
        self._positions[:batch, :width].copy_(torch.tensor(spans))
        graph.replay()
        return out[:rows]

    def _graph(self, batch: int, kv_len: int, width: int) -> tuple[Any, torch.Tensor]:
        key = (batch, kv_len, width)
        if key not in self._graphs:
            # The warm-up runs below really write K/V at positions 0..width-1 of slots
            # 0..batch-1, which may belong to live sequences when a graph is captured
            # mid-service: keep those positions and put them back afterwards.
            saved = (self.k_cache[:, :batch, :, :width].clone(),
                     self.v_cache[:, :batch, :, :width].clone())
            self._positions[:batch, :width] = torch.arange(width, device=self.device)
            self._tokens[:batch, :width].zero_()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up kernels and allocator outside the capture
                    self._run_static(batch, width, kv_len)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                out = self._run_static(batch, width, kv_len)
            self._graphs[key] = (graph, out)
            self.k_cache[:, :batch, :, :width] = saved[0]
            self.v_cache[:, :batch, :, :width] = saved[1]
        return self._graphs[key]

    @torch.inference_mode()
    def warmup(self) -> None:
        """Capture every graph now rather than on the first request that needs it."""
        if self.use_graphs:
            for width in self.widths:
                for batch in self.batch_buckets:
                    for kv_len in self.len_buckets:
                        self._graph(batch, kv_len, width)
        else:
            self.decode([0], [0])

    # ---- slots and the prefix pool ----------------------------------------------------

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` cache positions of slot src into slot dst."""
        self.k_cache[:, dst, :, :length] = self.k_cache[:, src, :, :length]
        self.v_cache[:, dst, :, :length] = self.v_cache[:, src, :, :length]

    def _pool_positions(self, blocks: list[int]) -> torch.Tensor:
        ids = torch.tensor(blocks, dtype=torch.long)[:, None] * BLOCK_TOKENS
        return (ids + torch.arange(BLOCK_TOKENS)).flatten().to(self.device)

    @torch.inference_mode()
    def load_prefix(self, slot: int, blocks: list[int]) -> None:
        """Copy pool blocks into the first len(blocks) * BLOCK_TOKENS positions of a slot."""
        if not blocks:
            return
        runs = _runs(list(enumerate(blocks)))
        if len(runs) <= MAX_SLICE_RUNS:
            for at, block, n in runs:
                dst, src = _span(at, n), _span(block, n)
                self.k_cache[:, slot, :, dst] = self.k_pool[:, :, src]
                self.v_cache[:, slot, :, dst] = self.v_pool[:, :, src]
            return
        where, n = self._pool_positions(blocks), len(blocks) * BLOCK_TOKENS
        self.k_cache[:, slot, :, :n] = self.k_pool[:, :, where]
        self.v_cache[:, slot, :, :n] = self.v_pool[:, :, where]

    @torch.inference_mode()
    def save_prefix(self, slot: int, placed: list[tuple[int, int]]) -> None:
        """Copy blocks of a slot into the pool: `placed` pairs (block index in the slot,
        pool block), as PrefixCache.insert returns them."""
        if not placed:
            return
        runs = _runs(placed)
        if len(runs) <= MAX_SLICE_RUNS:
            for at, block, n in runs:
                mine, theirs = _span(at, n), _span(block, n)
                self.k_pool[:, :, theirs] = self.k_cache[:, slot, :, mine]
                self.v_pool[:, :, theirs] = self.v_cache[:, slot, :, mine]
            return
        src = self._pool_positions([i for i, _ in placed])
        dst = self._pool_positions([b for _, b in placed])
        self.k_pool[:, :, dst] = self.k_cache[:, slot][:, :, src]
        self.v_pool[:, :, dst] = self.v_cache[:, slot][:, :, src]


MAX_SLICE_RUNS = 4
"""Prefix copies of at most this many runs of consecutive blocks are slice copies, more a
gather. The pool hands out blocks in order, so a prefix is usually one run; a slice copy
then moves the KV once, where a gather (an index tensor sent to the device, a gathered
temporary, then the copy) moves it twice: measured on the 2-core CPU, a 1,008-token prefix
of SmolLM2 in fp32 loads in 12-16 ms instead of 40-68 ms. A fragmented pool (after
evictions) would need a copy per run, and past a few runs one gather costs less."""


def _runs(pairs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(slot block, pool block, count) of each maximal run of pairs that both go up by one."""
    runs: list[list[int]] = []
    for at, block in pairs:
        last = runs[-1] if runs else None
        if last is not None and last[0] + last[2] == at and last[1] + last[2] == block:
            last[2] += 1
        else:
            runs.append([at, block, 1])
    return [(a, b, n) for a, b, n in runs]


def _span(block: int, n: int) -> slice:
    return slice(block * BLOCK_TOKENS, (block + n) * BLOCK_TOKENS)
