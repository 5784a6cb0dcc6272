"""Per-token activation quantisation for a dynamically quantised ONNX graph.

`onnxruntime.quantization.quantize_dynamic` inserts `DynamicQuantizeLinear`, which picks
one scale and zero point from the min and max of the whole activation tensor: the whole
batch, padding included. A text's vector then depends on which texts share its batch.
`per_token_activations` replaces each of those nodes by a symmetric quantisation with one
scale per token (the max |x| over the hidden axis) and a fixed zero point of 128, so the
integer matmuls that follow (`MatMulInteger`, unchanged) see each row on its own scale.
The scale tensor has shape (batch, seq, 1). onnxruntime's MatMulIntegerToFloat fusion
(extended optimisation level) assumes a scalar activation scale and silently gives wrong
results with a per-token one, so the activation scale is moved out of the fused pattern:
`Mul(Mul(Cast(MatMulInteger), w_scale), a_scale)` instead of `Mul(Cast(..), a_scale*w_scale)`.
"""

from __future__ import annotations

import numpy as np


def per_token_activations(model) -> int:  # noqa: ANN001 (onnx.ModelProto; onnx is optional)
    """Rewrite every DynamicQuantizeLinear of `model` in place; return how many."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    consts = [
        numpy_helper.from_array(np.array(1e-8, dtype=np.float32), "rowq_eps"),
        numpy_helper.from_array(np.array(127.0, dtype=np.float32), "rowq_qmax"),
        numpy_helper.from_array(np.array(128.0, dtype=np.float32), "rowq_offset"),
        numpy_helper.from_array(np.array(128, dtype=np.uint8), "rowq_zero_point"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "rowq_axes"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "rowq_one"),
    ]
    nodes = []
    count = 0
    consts_used = {c.name for c in consts} - {"rowq_axes"}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        count += 1
        x, (q, scale, zp) = node.input[0], node.output
        p = f"{node.name or q}_rowq"
        if opset >= 18:
            consts_used.add("rowq_axes")
            reduce = helper.make_node("ReduceMax", [f"{p}_abs", "rowq_axes"], [f"{p}_amax"],
                                      keepdims=1)
        else:
            reduce = helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], axes=[-1],
                                      keepdims=1)
        nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            reduce,
            helper.make_node("Max", [f"{p}_amax", "rowq_eps"], [f"{p}_amax_eps"]),
            helper.make_node("Div", [f"{p}_amax_eps", "rowq_qmax"], [scale]),
            helper.make_node("Div", [x, scale], [f"{p}_scaled"]),
            helper.make_node("Round", [f"{p}_scaled"], [f"{p}_round"]),
            helper.make_node("Add", [f"{p}_round", "rowq_offset"], [f"{p}_shift"]),
            helper.make_node("Cast", [f"{p}_shift"], [q], to=TensorProto.UINT8),
            helper.make_node("Identity", ["rowq_zero_point"], [zp]),
        ]
    _apply_scale_after(nodes, {n.output[1] for n in graph.node
                               if n.op_type == "DynamicQuantizeLinear"})
    del graph.node[:]
    graph.node.extend(nodes)
    if count:
        graph.initializer.extend(c for c in consts if c.name in consts_used)
    return count


def _apply_scale_after(nodes: list, act_scales: set[str]) -> None:
    """Turn Mul(x, Mul(a_scale, w_scale)) into Mul(Mul(x, w_scale), a_scale), in place."""
    from onnx import helper

    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    extra = []
    for n in nodes:
        if n.op_type != "Mul" or n.input[0] not in act_scales:
            continue
        a_scale, combined = n.input[0], n.output[0]
        n.input[0] = "rowq_one"  # the combined scale becomes the weight scale alone
        for user in consumers.get(combined, []):
            if user.op_type != "Mul":
                raise ValueError(f"unexpected consumer {user.op_type} of {combined}")
            tmp = f"{user.output[0]}_wscaled"
            final = user.output[0]
            user.output[0] = tmp
            extra.append((user, helper.make_node("Mul", [tmp, a_scale], [final])))
    for user, mul in extra:
        nodes.insert(nodes.index(user) + 1, mul)
