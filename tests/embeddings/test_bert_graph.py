"""The encoder's graph written from BERT weights (no torch): a tiny random BERT run through
onnxruntime against a numpy forward pass of the same weights, and the fusions onnxruntime's
optimiser finds in it (the ones a torch trace of the real model gets)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import save_file

from semcache.embeddings import bert_graph, export

HIDDEN, HEADS, LAYERS, INNER, VOCAB, POSITIONS = 32, 4, 2, 64, 50, 40


def tiny_bert(folder: Path, seed: int = 0, *, prefix: str = "") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    weights = {
        "embeddings.word_embeddings.weight": w(VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": w(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + w(HIDDEN), "embeddings.LayerNorm.bias": w(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            weights[f"{p}.attention.self.{name}.weight"] = w(HIDDEN, HIDDEN)
            weights[f"{p}.attention.self.{name}.bias"] = w(HIDDEN)
        weights.update({
            f"{p}.attention.output.dense.weight": w(HIDDEN, HIDDEN),
            f"{p}.attention.output.dense.bias": w(HIDDEN),
            f"{p}.attention.output.LayerNorm.weight": 1 + w(HIDDEN),
            f"{p}.attention.output.LayerNorm.bias": w(HIDDEN),
            f"{p}.intermediate.dense.weight": w(INNER, HIDDEN), f"{p}.intermediate.dense.bias": w(INNER),
            f"{p}.output.dense.weight": w(HIDDEN, INNER), f"{p}.output.dense.bias": w(HIDDEN),
            f"{p}.output.LayerNorm.weight": 1 + w(HIDDEN), f"{p}.output.LayerNorm.bias": w(HIDDEN),
        })
    folder.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v for k, v in weights.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": HIDDEN, "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS, "intermediate_size": INNER, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "vocab_size": VOCAB}))
    return weights


def reference(weights: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BERT's forward pass, mean pooling and L2 normalisation, in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}

    def norm(x: np.ndarray, p: str) -> np.ndarray:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x: np.ndarray, p: str) -> np.ndarray:
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    erf = np.vectorize(math.erf)
    batch, seq = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "embeddings.LayerNorm")
    additive = (1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min
    d = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"

        def heads(name: str, x: np.ndarray = x, p: str = p) -> np.ndarray:
            return dense(x, f"{p}.attention.self.{name}").reshape(batch, seq, HEADS, d).transpose(0, 2, 1, 3)

        scores = heads("query") @ heads("key").transpose(0, 1, 3, 2) / math.sqrt(d) + additive
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ heads("value")).transpose(0, 2, 1, 3).reshape(batch, seq, HIDDEN)
        x = norm(dense(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        inner = dense(x, f"{p}.intermediate.dense")
        inner = inner * 0.5 * (1 + erf(inner / math.sqrt(2)))
        x = norm(dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    mean = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(1, VOCAB, size=(3, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:], mask[2, 3:] = 0, 0  # padded rows
    ids[mask == 0] = 0
    return ids, mask


def run(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_graph_matches_a_numpy_forward_pass(tmp_path: Path, prefix: str) -> None:
    weights = tiny_bert(tmp_path / "model", prefix=prefix)
    bert_graph.save(tmp_path / "model", tmp_path / "plain.onnx")
    ids, mask = inputs()
    got = run(tmp_path / "plain.onnx", ids, mask)
    want = reference(weights, ids, mask)
    assert got.shape == (3, HIDDEN)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Padding changes nothing: row 2 alone, unpadded, gives the same vector.
    alone = run(tmp_path / "plain.onnx", ids[2:3, :3], mask[2:3, :3])
    np.testing.assert_allclose(alone[0], got[2], atol=1e-5)


def test_optimiser_fuses_the_graph_like_a_torch_trace(tmp_path: Path) -> None:
    """EmbedLayerNormalization, Attention, SkipLayerNormalization and BiasGelu: the fused
    CPU graph (the fp32 variant) keeps the outputs of the plain one."""
    weights = tiny_bert(tmp_path / "model")
    bert_graph.save(tmp_path / "model", tmp_path / "plain.onnx")
    export._build_fp32(tmp_path / "plain.onnx", tmp_path / "fused.onnx", HIDDEN, HEADS)
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert ops.count("Attention") == LAYERS and ops.count("EmbedLayerNormalization") == 1
    assert ops.count("BiasGelu") == LAYERS and ops.count("SkipLayerNormalization") == 2 * LAYERS
    ids, mask = inputs()
    np.testing.assert_allclose(run(tmp_path / "fused.onnx", ids, mask), reference(weights, ids, mask),
                               atol=2e-5)


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    tiny_bert(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    for change in ({"model_type": "roberta"}, {"hidden_act": "relu"},
                   {"position_embedding_type": "relative_key"}):
        (tmp_path / "model" / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(bert_graph.UnsupportedModelError):
            bert_graph.build(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    (tmp_path / "model" / "model.safetensors").unlink()
    with pytest.raises(bert_graph.UnsupportedModelError, match="needs torch"):
        bert_graph.build(tmp_path / "model")
