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
next tokens overwrite it. The cache is `max_draft` positions (at least one) longer than
max_seq_len so that padding queries (a short draft in a wide step, a short prompt in a wide
prefill, a padding row) land in room no real token uses.

The forward pass is written here over the Hugging Face module's own submodules (projections,
norms, MLP, rotary embedding), because the library's cache objects assume one position per
batch; this supports the Llama family's layout (Llama, SmolLM, Mistral, Qwen2/3).
A small model's step is bound by how many kernels it launches, not by arithmetic, so the
layers launch few: the projections that share an input are one matrix product each (queries,
keys and values; gate and up), norms are torch's fused RMSNorm, queries and keys rotate in
one pass, and residual adds ride on the output projections. On CUDA, decoding and verifying
steps are captured as CUDA graphs, one per (batch, length, width) bucket, and so are short
prefills (up to 128 new tokens: the question after a cached prefix), whose eager launch
cost would otherwise be most of the time to first token.

Only the engine's worker thread calls a runner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ModelLoadError
from .prefix_cache import BLOCK_TOKENS

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

PREFILL_GRAPH_WIDTHS = (32, 128)
"""Prefill widths that get CUDA graphs: a prefill of at most 128 new tokens (the question
after a cached system prompt or conversation, a short prompt) is padded to the next of
these and replayed, where eagerly it costs as many kernel launches as a long prompt's."""

PREFILL_GRAPH_TOKENS = 1024
"""Most tokens (batch bucket x width) a prefill graph feeds; larger prefills run eagerly,
where the device's work, not the launches, is most of their cost."""


def _rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [rows, q, heads, D] with cos/sin_signed [rows, q, 1, D].

    The Llama layout rotates the two halves of each head: x * cos + rotate_half(x) * sin,
    where rotate_half(x) = cat(-x2, x1). That is roll(x, D/2) = cat(x2, x1) times sin with
    its first half negated (`sin_signed`, made once per step): three kernels, not five."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)


def _rms(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """A Llama-style RMSNorm module applied as one fused kernel (torch's F.rms_norm)."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    return F.rms_norm(x, (x.shape[-1],), norm.weight, eps)


@dataclass
class _Fused:
    """One layer's projections that read the same input, as one matrix each: the queries,
    keys and values; the MLP's gate and up projections."""

    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None


def _fuse(linears: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate linear layers' weights (and biases) along the output, and point the
    modules' own parameters at slices of the result, so the model keeps one copy."""
    with torch.no_grad():
        weight = torch.cat([m.weight for m in linears])
        biased = [m.bias is not None for m in linears]
        bias = None
        if any(biased):
            bias = torch.cat([m.bias if m.bias is not None
                              else m.weight.new_zeros(m.out_features) for m in linears])
        at = 0
        for m in linears:
            n = m.out_features
            m.weight = torch.nn.Parameter(weight[at : at + n], requires_grad=False)
            if m.bias is not None and bias is not None:
                m.bias = torch.nn.Parameter(bias[at : at + n], requires_grad=False)
            at += n
    return weight, bias


def _add_linear(h: torch.Tensor, x: torch.Tensor, linear: Any) -> None:
    """h += linear(x), in place: the residual add rides on the matrix product (beta = 1)."""
    h2 = h.view(-1, h.shape[-1])
    h2.addmm_(x.reshape(-1, x.shape[-1]), linear.weight.t())
    if linear.bias is not None:
        h2.add_(linear.bias)


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
        self.cache_len = -(-(max_seq_len + max(max_draft, 1)) // 64) * 64
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
        # Prefill graphs: one static buffer per width of tokens, positions, slot and last
        # position of each row (see _prefill_graphed).
        self.prefill_widths = tuple(w for w in PREFILL_GRAPH_WIDTHS if w < self.cache_len)
        self._prefill_graphs: dict[tuple[int, int, int], tuple[Any, torch.Tensor]] = {}
        self._prefill_buffers: dict[int, torch.Tensor] = {}
        # Each layer's projections that share an input, as one matrix (fewer, larger
        # kernels: a small model's step is bound by how many kernels it launches).
        self.fused = []
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv, qkv_bias = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
            gate_up, gate_up_bias = _fuse([mlp.gate_proj, mlp.up_proj])
            self.fused.append(_Fused(qkv, qkv_bias, gate_up, gate_up_bias))

    # ---- the layers -------------------------------------------------------------------

    def _attention(self, layer: Any, fused: _Fused, x: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, store: Any, idx: int) -> torch.Tensor:
        """Attention of x [rows, q, hidden]; returns its output before o_proj, [rows, q,
        heads * head_dim]. Tensors stay [rows, q, heads, D], the layout the cache store
        indexes by (row, position), so keys and values go in without a transpose."""
        attn = layer.self_attn
        rows, q_len, _ = x.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        qkv = F.linear(x, fused.qkv, fused.qkv_bias).view(rows, q_len, heads + 2 * kv_heads, dim)
        if hasattr(attn, "q_norm"):  # Qwen3 normalises queries and keys per head first
            q = _rope(_rms(attn.q_norm, qkv[:, :, :heads]), cos, sin)
            k = _rope(_rms(attn.k_norm, qkv[:, :, heads : heads + kv_heads]), cos, sin)
        else:  # queries and keys rotate together
            qk = _rope(qkv[:, :, : heads + kv_heads], cos, sin)
            q, k = qk[:, :, :heads], qk[:, :, heads:]
        keys, values, mask = store(idx, k, qkv[:, :, heads + kv_heads :])
        groups = heads // kv_heads
        # Grouped-query attention: fold each KV head's query heads into the query axis, so
        # attention reads each cached key once instead of expanding the cache `groups` times
        # (query head h uses KV head h // groups; the mask is tiled to match).
        q = q.view(rows, q_len, kv_heads, groups, dim).permute(0, 2, 3, 1, 4)
        q = q.reshape(rows, kv_heads, groups * q_len, dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
        out = out.view(rows, kv_heads, groups, q_len, dim).permute(0, 3, 1, 2, 4)
        return out.reshape(rows, q_len, heads * dim)

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, store: Any) -> torch.Tensor:
        h = self.embed(ids)
        cos, sin = self.rotary(h, positions)
        half = cos.shape[-1] // 2
        cos = cos[:, :, None].to(h.dtype)
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)[:, :, None].to(h.dtype)
        for idx, (layer, fused) in enumerate(zip(self.layers, self.fused, strict=True)):
            attn = self._attention(layer, fused, _rms(layer.input_layernorm, h), cos, sin,
                                   store, idx)
            _add_linear(h, attn, layer.self_attn.o_proj)
            gate, up = F.linear(_rms(layer.post_attention_layernorm, h), fused.gate_up,
                                fused.gate_up_bias).chunk(2, dim=-1)
            _add_linear(h, layer.mlp.act_fn(gate) * up, layer.mlp.down_proj)
        return h

    def _rows(self, slots: slice | torch.Tensor, ids: torch.Tensor, positions: torch.Tensor,
              kv_len: int) -> torch.Tensor:
        """Hidden states [rows, width, hidden] of rows feeding ids[r, j] at positions[r, j]
        into the slots `slots` (a range, or a tensor of slot numbers, one per row), reading
        their caches up to kv_len. Graph-capturable: no host syncs, shapes fixed by the
        arguments."""
        rows, width = ids.shape
        keys_pos = torch.arange(kv_len, device=self.device)
        visible = (keys_pos[None, None, :] <= positions[:, :, None])[:, None]  # [rows,1,w,kv]
        # An additive mask made once per step: given a boolean one, attention converts it
        # in every layer.
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~visible, float("-inf"))
        groups = self.heads // self.kv_heads
        if width > 1 and groups > 1:
            mask = mask.repeat(1, 1, groups, 1)
        if isinstance(slots, slice):
            slot_ids = torch.arange(slots.start, slots.stop, device=self.device)[:, None]
        else:
            slot_ids = slots[:, None]

        def store(idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple:
            self.k_cache[idx, slot_ids, :, positions] = k
            self.v_cache[idx, slot_ids, :, positions] = v
            if isinstance(slots, slice):
                return (self.k_cache[idx, slots, :, :kv_len],
                        self.v_cache[idx, slots, :, :kv_len], mask)
            return (self.k_cache[idx, :, :, :kv_len].index_select(0, slots),
                    self.v_cache[idx, :, :, :kv_len].index_select(0, slots), mask)

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
        where no real query looks. Short prefills (the new part of a prompt whose prefix
        was cached, a short question) replay a CUDA graph; long ones run eagerly. Returns
        float32 logits of each prompt's last position, [len(prompts), vocab]."""
        starts = starts or [0] * len(prompts)
        rows, width = len(prompts), max(len(p) for p in prompts)
        graphed = self._prefill_shape(rows, width)
        if graphed is not None:
            logits = self._prefill_graphed(first_slot, prompts, starts, *graphed)
            if logits is not None:
                return logits
        ids = torch.zeros(rows, width, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        begin = torch.tensor(starts, dtype=torch.long)
        positions = (begin[:, None] + torch.arange(width)).clamp_(max=self.cache_len - 1)
        need = max(s + len(p) for s, p in zip(starts, prompts, strict=True))
        h = self._rows(slice(first_slot, first_slot + rows), ids.to(self.device),
                       positions.to(self.device), self._kv_len(need))
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        h = h[torch.arange(rows, device=self.device), last]
        return self.lm_head(self.norm(h)).float()

    def _prefill_shape(self, rows: int, width: int) -> tuple[int, int] | None:
        """(batch, width) bucket of the prefill graph for this many rows this wide, or None
        when the prefill runs eagerly (no graphs, or too many tokens)."""
        if not self.use_graphs:
            return None
        for w in self.prefill_widths:
            if width <= w:
                batch = next((b for b in self.batch_buckets if b >= rows), 0)
                return (batch, w) if batch and batch * w <= PREFILL_GRAPH_TOKENS else None
        return None

    def _prefill_graphed(self, first_slot: int, prompts: list[list[int]], starts: list[int],
                         batch: int, width: int) -> torch.Tensor | None:
        rows = len(prompts)
        need = max(starts) + width
        kv_len = next(n for n in self.len_buckets if n >= min(need, self.cache_len))
        # One host-to-device copy of every input: tokens, positions, slot, last position.
        # Padding rows write their K/V at the last cache position of the first row's slot,
        # room past max_seq_len that no real query reads.
        host = torch.zeros(batch, 2 * width + 2, dtype=torch.long)
        host[:, width : 2 * width] = self.cache_len - 1
        host[:, 2 * width] = first_slot
        for i, (p, s) in enumerate(zip(prompts, starts, strict=True)):
            host[i, : len(p)] = torch.tensor(p, dtype=torch.long)
            host[i, width : 2 * width] = torch.arange(s, s + width).clamp_(max=self.cache_len - 1)
            host[i, 2 * width] = first_slot + i
            host[i, 2 * width + 1] = len(p) - 1
        captured = self._prefill_graph(batch, kv_len, width)  # before filling its inputs
        if captured is None:
            return None
        graph, out = captured
        self._prefill_inputs(width)[:batch].copy_(host)
        graph.replay()
        return out[:rows]

    def _prefill_inputs(self, width: int) -> torch.Tensor:
        """The static input buffer of the prefill graphs of one width, [slots, 2w + 2]."""
        if width not in self._prefill_buffers:
            self._prefill_buffers[width] = torch.zeros(self.slots, 2 * width + 2,
                                                       dtype=torch.long, device=self.device)
        return self._prefill_buffers[width]

    def _run_prefill_static(self, batch: int, width: int, kv_len: int) -> torch.Tensor:
        """The body of a prefill graph: float32 logits [batch, vocab] of each row's last
        real position, from the static buffer of this width."""
        buf = self._prefill_inputs(width)[:batch]
        ids, positions = buf[:, :width], buf[:, width : 2 * width]
        slots, last = buf[:, 2 * width], buf[:, 2 * width + 1]
        h = self._rows(slots, ids, positions, kv_len)
        h = h[torch.arange(batch, device=self.device), last]
        return self.lm_head(self.norm(h)).float()

    # ---- decode and verify ------------------------------------------------------------

    def _run_static(self, rows: int, width: int, kv_len: int) -> torch.Tensor:
        """One step of slots 0..rows-1 reading the static input buffers: the graph body.
        Returns float32 logits [rows, width, vocab]."""
        h = self._rows(slice(0, rows), self._tokens[:rows, :width],
                       self._positions[:rows, :width], kv_len)
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

    def _capture(self, body: Any) -> tuple[Any, torch.Tensor]:
        """A CUDA graph of body() after two warm-up runs on a side stream; (graph, output)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up kernels and allocator outside the capture
                body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            out = body()
        return graph, out

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
            self._graphs[key] = self._capture(lambda: self._run_static(batch, width, kv_len))
            self.k_cache[:, :batch, :, :width] = saved[0]
            self.v_cache[:, :batch, :, :width] = saved[1]
        return self._graphs[key]

    def _prefill_graph(self, batch: int, kv_len: int,
                       width: int) -> tuple[Any, torch.Tensor] | None:
        """The prefill graph of this shape, captured on first use; None when prefill graphs
        could not be captured on this device (prefills then run eagerly: slower, same
        logits)."""
        key = (batch, kv_len, width)
        if key not in self._prefill_graphs:
            if not self.prefill_widths:
                return None
            # Captured with every row writing only the last cache position of slot 0, room
            # past max_seq_len that no real query reads, so live sequences are untouched.
            buf = self._prefill_inputs(width)[:batch]
            buf.zero_()
            buf[:, width : 2 * width] = self.cache_len - 1
            try:
                self._prefill_graphs[key] = self._capture(
                    lambda: self._run_prefill_static(batch, width, kv_len))
            except RuntimeError as e:  # torch.AcceleratorError: a kernel refused capture
                log.warning("prefill graph %s could not be captured (%s); prefills run "
                            "eagerly", key, str(e).splitlines()[0])
                torch.cuda.synchronize()
                self.prefill_widths = ()
                self._prefill_graphs.clear()
                return None
        return self._prefill_graphs[key]

    @torch.inference_mode()
    def warmup(self) -> None:
        """Capture every graph now rather than on the first request that needs it."""
        if self.use_graphs:
            for width in self.widths:
                for batch in self.batch_buckets:
                    for kv_len in self.len_buckets:
                        self._graph(batch, kv_len, width)
            shapes = [(b, n, w) for w in self.prefill_widths for b in self.batch_buckets
                      if b * w <= PREFILL_GRAPH_TOKENS for n in self.len_buckets if n >= w]
            for batch, kv_len, width in shapes:
                if self._prefill_graph(batch, kv_len, width) is None:
                    break
        else:
            self.decode([0], [0])

    @property
    def graph_count(self) -> int:
        return len(self._graphs) + len(self._prefill_graphs)


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
