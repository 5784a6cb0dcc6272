"""The encoder's ONNX graph written directly from a BERT checkpoint, without torch.

A sentence-transformers BERT (all-MiniLM-L6-v2 and its family) is a fixed stack of standard
operators, so its graph can be spelled out node by node from the weights in
`model.safetensors`: embeddings, `num_hidden_layers` encoder layers, mean pooling over the
real tokens and L2 normalisation. The nodes follow the pattern of transformers' classic ONNX
export (Q/K/V MatMul + Add + Reshape + Transpose, scaled scores + additive mask, Softmax,
erf GELU, LayerNormalization), which is what onnxruntime's transformer optimiser fuses into
EmbedLayerNormalization, Attention, SkipLayerNormalization and BiasGelu, so the variants
built from this graph (export.py) are the ones a torch trace gives.

This is what lets `pip install semcache` (no torch: several hundred MB, and a CUDA build of
several GB where pip's default index serves one) export the encoder on first start. Other
architectures still go through the torch trace (`semcache[backend]` installs torch).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
SUPPORTED_ACTIVATIONS = ("gelu",)


class UnsupportedModelError(Exception):
    """The folder is not a BERT checkpoint this module can write a graph for."""


@dataclass(frozen=True, kw_only=True)
class BertShape:
    hidden: int
    heads: int
    layers: int
    eps: float

    @classmethod
    def read(cls, config: dict[str, Any]) -> BertShape:
        if config.get("model_type") != "bert":
            raise UnsupportedModelError(f"model_type {config.get('model_type')!r} is not bert")
        if config.get("hidden_act", "gelu") not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(f"hidden_act {config.get('hidden_act')!r} is not erf gelu")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModelError("only absolute position embeddings are supported")
        return cls(hidden=int(config["hidden_size"]), heads=int(config["num_attention_heads"]),
                   layers=int(config["num_hidden_layers"]),
                   eps=float(config.get("layer_norm_eps", 1e-12)))


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors as float32 arrays, names without a leading `bert.`."""
    path = folder / "model.safetensors"
    if not path.is_file():
        raise UnsupportedModelError(f"{folder}: no model.safetensors (a .bin checkpoint needs torch)")
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    return {k.removeprefix("bert."): (v.astype(np.float32) if v.dtype.kind == "f" else v)
            for k, v in tensors.items()}


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{name}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        # torch's Linear stores [out, in]; MatMul wants [in, out].
        w = self.const(f"{prefix}.weight_t", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", [self.op("MatMul", [x, w], prefix + "/MatMul"), b], prefix + "/Add")

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        scale = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        bias = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=eps)


def build(folder: Path) -> Any:
    """The ONNX model (onnx.ModelProto): `input_ids`, `attention_mask` (int64, batch x seq)
    -> `embedding` (float32, batch x hidden, unit length)."""
    from onnx import TensorProto, helper

    config = json.loads((folder / "config.json").read_text())
    shape = BertShape.read(config)
    weights = load_weights(folder)
    g = _Graph()
    ids, mask = "input_ids", "attention_mask"
    hidden = _embeddings(g, weights, shape, ids)
    additive = _additive_mask(g, mask)
    for i in range(shape.layers):
        hidden = _layer(g, weights, shape, hidden, additive, f"encoder.layer.{i}")
    _pool(g, hidden, mask)
    g.nodes[-1].output[0] = embedding = "embedding"  # the name callers read
    batch_seq = ["batch", "seq"]
    graph = helper.make_graph(
        g.nodes, "sentence_encoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, batch_seq),
         helper.make_tensor_value_info(mask, TensorProto.INT64, batch_seq)],
        [helper.make_tensor_value_info(embedding, TensorProto.FLOAT, ["batch", shape.hidden])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pytorch")
    # "pytorch": onnxruntime's optimiser picks its fusion rules by producer; these nodes are
    # the ones a torch export writes.
    model.ir_version = 8
    return model


def _embeddings(g: _Graph, w: dict[str, np.ndarray], shape: BertShape, ids: str) -> str:
    words = g.const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    positions = g.const("embeddings.position_embeddings.weight",
                        w["embeddings.position_embeddings.weight"])
    types = g.const("embeddings.token_type_embeddings.weight",
                    w["embeddings.token_type_embeddings.weight"])
    ids_shape = g.op("Shape", [ids], "embeddings/Shape")
    seq = g.op("Gather", [ids_shape, g.const("one_index", np.array(1, dtype=np.int64))],
               "embeddings/seq", axis=0)
    arange = g.op("Range", [g.const("zero_i64", np.array(0, dtype=np.int64)), seq,
                            g.const("one_i64", np.array(1, dtype=np.int64))], "embeddings/Range")
    position_ids = g.op("Expand", [
        g.op("Unsqueeze", [arange, g.const("axes_0", np.array([0], dtype=np.int64))],
             "embeddings/Unsqueeze"), ids_shape], "embeddings/position_ids")
    # Every token is of segment 0: semcache embeds one text at a time.
    type_ids = g.op("Mul", [ids, g.const("zero_ids", np.array(0, dtype=np.int64))], "embeddings/type_ids")
    summed = g.op("Add", [
        g.op("Add", [g.op("Gather", [words, ids], "embeddings/words", axis=0),
                     g.op("Gather", [types, type_ids], "embeddings/types", axis=0)], "embeddings/Add"),
        g.op("Gather", [positions, position_ids], "embeddings/positions", axis=0)], "embeddings/Add")
    return g.layer_norm(summed, w, "embeddings.LayerNorm", shape.eps)


def _additive_mask(g: _Graph, mask: str) -> str:
    """0 for real tokens, float32's lowest for padding, shaped batch x 1 x 1 x seq."""
    # Two Unsqueeze nodes, not one with axes [1, 2]: the pattern the Attention fusion matches.
    expanded = g.op("Unsqueeze", [
        g.op("Unsqueeze", [mask, g.const("axes_1", np.array([1], dtype=np.int64))], "mask/Unsqueeze"),
        g.const("axes_2", np.array([2], dtype=np.int64))], "mask/Unsqueeze")
    as_float = g.op("Cast", [expanded], "mask/Cast", to=1)
    inverted = g.op("Sub", [g.const("one_f", np.array(1.0, dtype=np.float32)), as_float], "mask/Sub")
    lowest = g.const("lowest_f", np.array(np.finfo(np.float32).min, dtype=np.float32))
    return g.op("Mul", [inverted, lowest], "mask/Mul")


def _layer(g: _Graph, w: dict[str, np.ndarray], shape: BertShape, x: str, additive: str,
           prefix: str) -> str:
    head_dim = shape.hidden // shape.heads
    split = g.const(f"{prefix}/split_shape", np.array([0, 0, shape.heads, head_dim], dtype=np.int64))
    merge = g.const(f"{prefix}/merge_shape", np.array([0, 0, shape.hidden], dtype=np.int64))
    att = f"{prefix}.attention.self"

    def heads(name: str, perm: list[int]) -> str:
        projected = g.linear(x, w, f"{att}.{name}")
        return g.op("Transpose", [g.op("Reshape", [projected, split], f"{att}.{name}/Reshape")],
                    f"{att}.{name}/Transpose", perm=perm)

    q = heads("query", [0, 2, 1, 3])
    k = heads("key", [0, 2, 3, 1])
    v = heads("value", [0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [q, k], f"{att}/scores"),
                          g.const(f"{prefix}/sqrt_d", np.array(math.sqrt(head_dim), dtype=np.float32))],
                  f"{att}/Div")
    probs = g.op("Softmax", [g.op("Add", [scores, additive], f"{att}/mask")], f"{att}/Softmax", axis=-1)
    context = g.op("Reshape", [
        g.op("Transpose", [g.op("MatMul", [probs, v], f"{att}/context")], f"{att}/context_t",
             perm=[0, 2, 1, 3]), merge], f"{att}/merge")
    out = f"{prefix}.attention.output"
    attended = g.layer_norm(g.op("Add", [g.linear(context, w, f"{out}.dense"), x], f"{out}/residual"),
                            w, f"{out}.LayerNorm", shape.eps)
    inner = g.linear(attended, w, f"{prefix}.intermediate.dense")
    gelu = _gelu(g, inner, f"{prefix}.intermediate")
    ffn_out = f"{prefix}.output"
    return g.layer_norm(g.op("Add", [g.linear(gelu, w, f"{ffn_out}.dense"), attended],
                             f"{ffn_out}/residual"), w, f"{ffn_out}.LayerNorm", shape.eps)


def _gelu(g: _Graph, x: str, prefix: str) -> str:
    """x * 0.5 * (1 + erf(x / sqrt 2)): the exact GELU, in the node order onnxruntime fuses."""
    erf = g.op("Erf", [g.op("Div", [x, g.const(f"{prefix}/sqrt2", np.array(math.sqrt(2.0), np.float32))],
                            f"{prefix}/gelu_div")], f"{prefix}/gelu_erf")
    plus = g.op("Add", [erf, g.const(f"{prefix}/one", np.array(1.0, np.float32))], f"{prefix}/gelu_add")
    return g.op("Mul", [g.op("Mul", [x, plus], f"{prefix}/gelu_mul"),
                        g.const(f"{prefix}/half", np.array(0.5, np.float32))], f"{prefix}/gelu")


def _pool(g: _Graph, hidden: str, mask: str) -> str:
    """Mean over the real tokens, then L2 normalisation (sentence-transformers' pooling)."""
    weights = g.op("Cast", [g.op("Unsqueeze", [mask, "axes_2"], "pool/Unsqueeze")], "pool/Cast", to=1)
    axis1 = "axes_1"
    summed = g.op("ReduceSum", [g.op("Mul", [hidden, weights], "pool/Mul"), axis1], "pool/sum", keepdims=0)
    count = g.op("Clip", [g.op("ReduceSum", [weights, axis1], "pool/count", keepdims=0),
                          g.const("min_count", np.array(1e-9, np.float32))], "pool/Clip")
    mean = g.op("Div", [summed, count], "pool/mean")
    # ReduceL2 takes its axes as an attribute until opset 18 (ReduceSum: an input from 13).
    norm = g.op("Max", [g.op("ReduceL2", [mean], "pool/norm", axes=[-1], keepdims=1),
                        g.const("min_norm", np.array(1e-12, np.float32))], "pool/Max")
    return g.op("Div", [mean, norm], "pool/normalise")


def save(folder: Path, out: Path) -> None:
    """Write the graph for the checkpoint in `folder` to `out`."""
    import onnx

    onnx.save_model(build(folder), str(out))
