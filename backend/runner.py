"""The model step: prefill and batched decoding over a static, slotted KV cache.

The runner owns the KV cache: one preallocated tensor per K and V of shape
[layers, slots, kv_heads, max_seq_len, head_dim]. A sequence holds one slot for its whole
life, and its tokens sit at their positions in that slot, so a sequence joining or leaving
never touches (or recomputes) anyone else's cache. The engine keeps the active sequences in
slots 0..B-1 (it moves the last one into a freed hole), so a decoding step is one batch of
B rows that read their own slots through a per-row length mask.

The forward pass is written here over the Hugging Face module's own submodules (projections,
norms, MLP, rotary embedding), because the library's cache objects assume one position per
batch; this supports the Llama family's layout (Llama, SmolLM, Mistral, Qwen2/3).
On CUDA the decoding step is captured as CUDA graphs, one per (batch, length) bucket: for a
small model the step is otherwise all Python and kernel-launch overhead.

Only the engine's worker thread calls a runner.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .errors import ModelLoadError

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
    """Prefill and decode steps of one causal LM over a slotted static KV cache."""

    def __init__(
        self, model: Any, *, slots: int, max_seq_len: int, cuda_graphs: bool = True
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
        self.slots, self.max_seq_len = slots, max_seq_len
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        shape = (len(self.layers), slots, self.kv_heads, max_seq_len, self.head_dim)
        self.k_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.vocab_size = self.lm_head.out_features
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self.batch_buckets = _buckets(slots, 1)
        self.len_buckets = _buckets(max_seq_len, min(128, max_seq_len))
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: Any = None
        # Static inputs of the captured graphs (the eager path uses them too).
        self._tokens = torch.zeros(slots, dtype=torch.long, device=self.device)
        self._positions = torch.zeros(slots, dtype=torch.long, device=self.device)

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
        if q_len == 1 and groups > 1:
            # Decoding with grouped-query attention: fold each KV head's query heads into
            # the query axis, so attention reads each cached key once instead of expanding
            # the cache `groups` times (query head h uses KV head h // groups).
            q = q.reshape(rows, self.kv_heads, groups, self.head_dim)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask,
                                                 scale=self.scale)
            out = out.reshape(rows, self.heads, 1, self.head_dim)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask,
                                                 scale=self.scale, enable_gqa=groups > 1)
        return attn.o_proj(out.transpose(1, 2).reshape(rows, q_len, -1))

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, store: Any) -> torch.Tensor:
        h = self.embed(ids)
        cos, sin = self.rotary(h, positions)
        for idx, layer in enumerate(self.layers):
            h = h + self._attention(layer, layer.input_layernorm(h), cos, sin, store, idx)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h

    # ---- prefill ----------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, first_slot: int, prompts: list[list[int]]) -> torch.Tensor:
        """Run the prompts of sequences in slots first_slot.. and fill their caches.

        Prompts are right-padded to the longest; padding keys are masked out, and the cache
        positions they write are overwritten by decoding before anyone reads them.
        Returns float32 logits of each prompt's last position, [len(prompts), vocab]."""
        rows, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros(rows, width, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        ids = ids.to(self.device)
        positions = torch.arange(width, device=self.device).expand(rows, width)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        valid = positions < lengths[:, None]  # [rows, width] keys that are real tokens
        mask = causal[None, None] & valid[:, None, None, :]
        end = first_slot + rows

        def store(idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple:
            self.k_cache[idx, first_slot:end, :, :width] = k
            self.v_cache[idx, first_slot:end, :, :width] = v
            return k, v, mask

        h = self._layers(ids, positions, store)
        last = h[torch.arange(rows, device=self.device), lengths - 1]
        return self.lm_head(self.norm(last)).float()

    # ---- decode -----------------------------------------------------------------------

    def _decode_rows(self, rows: int, kv_len: int) -> torch.Tensor:
        """One decoding step for slots 0..rows-1 reading the static input buffers; the
        graph-capturable core (no host syncs, fixed shapes)."""
        tokens = self._tokens[:rows, None]
        positions = self._positions[:rows, None]
        keys_pos = torch.arange(kv_len, device=self.device)
        mask = (keys_pos[None, :] <= positions)[:, None, None, :]  # [rows, 1, 1, kv_len]
        row_ids = torch.arange(rows, device=self.device)

        def store(idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple:
            self.k_cache[idx, row_ids, :, positions[:, 0]] = k[:, :, 0]
            self.v_cache[idx, row_ids, :, positions[:, 0]] = v[:, :, 0]
            return self.k_cache[idx, :rows, :, :kv_len], self.v_cache[idx, :rows, :, :kv_len], mask

        h = self._layers(tokens, positions, store)
        return self.lm_head(self.norm(h[:, 0])).float()

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Feed tokens[i] at positions[i] for the sequence in slot i (i < len(tokens)).

        Returns float32 logits [len(tokens), vocab]."""
        rows = len(tokens)
        need = max(positions) + 1
        if self.use_graphs:
            batch = next(b for b in self.batch_buckets if b >= rows)
            kv_len = next(n for n in self.len_buckets if n >= need)
            # Padding rows read slot-local position 0 of free slots: harmless, since a
            # sequence that later takes such a slot prefills over it.
            pad = [0] * (batch - rows)
            graph, out = self._graph(batch, kv_len)  # before filling the inputs it uses
            self._tokens[:batch].copy_(torch.tensor(tokens + pad))
            self._positions[:batch].copy_(torch.tensor(positions + pad))
            graph.replay()
            return out[:rows]
        self._tokens[:rows] = torch.tensor(tokens)
        self._positions[:rows] = torch.tensor(positions)
        # On CPU, attention reads only as far as the longest sequence needs, rounded up to
        # 64 so that the kernels see few distinct shapes.
        kv_len = min(self.max_seq_len, -(-need // 64) * 64)
        return self._decode_rows(rows, kv_len)

    def _graph(self, batch: int, kv_len: int) -> tuple[Any, torch.Tensor]:
        key = (batch, kv_len)
        if key not in self._graphs:
            # The warm-up runs below really write K/V at position 0 of slots 0..batch-1,
            # which may belong to live sequences when a graph is captured mid-service.
            saved = (self.k_cache[:, :batch, :, 0].clone(), self.v_cache[:, :batch, :, 0].clone())
            self._positions[:batch].zero_()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up kernels and allocator outside the capture
                    self._decode_rows(batch, kv_len)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                out = self._decode_rows(batch, kv_len)
            self._graphs[key] = (graph, out)
            self.k_cache[:, :batch, :, 0], self.v_cache[:, :batch, :, 0] = saved
        return self._graphs[key]

    @torch.inference_mode()
    def warmup(self) -> None:
        """Capture every decoding graph now rather than on the first request that needs it."""
        if self.use_graphs:
            for batch in self.batch_buckets:
                for kv_len in self.len_buckets:
                    self._graph(batch, kv_len)
        else:
            self.decode([0], [0])

    # ---- slot management --------------------------------------------------------------

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` cache positions of slot src into slot dst."""
        self.k_cache[:, dst, :, :length] = self.k_cache[:, src, :, :length]
        self.v_cache[:, dst, :, :length] = self.v_cache[:, src, :, :length]
