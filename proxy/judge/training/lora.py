"""Low-rank adapters (LoRA) for the larger pair-model bases.

A frozen nn.Linear gains W + (B @ A) * alpha / r, and only A and B (with the head and the
layer norms) train: a fine-tuned 110M-parameter base then ships as a few MB and is merged
into the packaged base at set-up (`merge`), giving a plain transformers model again.
"""

from __future__ import annotations

from typing import Any

import torch

ALPHA = 16.0
TARGETS = {
    "mpnet": ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
              "intermediate.dense", "output.dense"),
    "smollm2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


class LoRA(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.scale = ALPHA / rank
        self.lora_a = torch.nn.Parameter(torch.randn(rank, base.in_features) / rank ** 0.5)
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def _trained_in_full(name: str) -> bool:
    """The head and the norms are small and train in full beside the adapters."""
    return any(part in name for part in ("classifier", "score.", "LayerNorm", "norm.weight",
                                         "norm.bias"))


def wrap(model: torch.nn.Module, base: str, rank: int) -> None:
    """Freeze the model and put adapters on the linear layers of TARGETS[base]."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and any(t in full for t in TARGETS[base]):
                setattr(module, child_name, LoRA(child, rank))
    for name, p in model.named_parameters():
        if "lora_" in name or _trained_in_full(name):
            p.requires_grad_(True)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changed: the adapters, the head and the norms (fp16)."""
    return {k: v.detach().half().cpu() for k, v in model.state_dict().items()
            if "lora_" in k or _trained_in_full(k)}


def merge(model: torch.nn.Module, saved: dict[str, Any], rank: int) -> torch.nn.Module:
    """The plain base `model` with a saved state merged in: W += B @ A * alpha / r, and the
    head and norms replaced."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in saved.items():
            if key.endswith(".lora_a"):
                stem = key[: -len(".lora_a")]
                delta = saved[stem + ".lora_b"].float() @ value.float()
                params[stem + ".weight"].add_(delta * (ALPHA / rank))
            elif not key.endswith(".lora_b"):
                name = key.replace(".base.", ".")
                if name in params:
                    params[name].copy_(value.float())
    return model
