"""What a hit saved in money: the operator's `[costs]` prices, then a built-in list.

The built-in list holds the providers' published list prices for common models, in USD per
1,000 tokens (prompt, completion), as of 2025. It exists so that "money saved" means something
from the first hit; it is not a bill. Prices change and discounts (batch, cached input,
contracts) are not in it: name your own in `[costs]`, which win over it, or turn it off with
`costs.builtin_prices = false`. A local model (upstream "bundled") costs nothing per token, so
the built-in list is not used for it.

Model names are matched as clients send them, then by their longest listed prefix that ends at
a "-" (so "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini", not "gpt-4o"), after dropping a
provider prefix ("openai/gpt-4o").
"""

from __future__ import annotations

from collections.abc import Mapping

BUILTIN_PER_1K: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-5": (0.00125, 0.01),
    "gpt-5-mini": (0.00025, 0.002),
    "gpt-5-nano": (0.00005, 0.0004),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4-turbo": (0.01, 0.03),
    "gpt-4": (0.03, 0.06),
    "gpt-3.5-turbo": (0.0005, 0.0015),
    "o1": (0.015, 0.06),
    "o1-mini": (0.0011, 0.0044),
    "o3": (0.002, 0.008),
    "o3-mini": (0.0011, 0.0044),
    "o4-mini": (0.0011, 0.0044),
    # Anthropic
    "claude-opus-4": (0.015, 0.075),
    "claude-sonnet-4": (0.003, 0.015),
    "claude-3-7-sonnet": (0.003, 0.015),
    "claude-3-5-sonnet": (0.003, 0.015),
    "claude-3-5-haiku": (0.0008, 0.004),
    "claude-3-opus": (0.015, 0.075),
    "claude-3-haiku": (0.00025, 0.00125),
    # Google
    "gemini-2.5-pro": (0.00125, 0.01),
    "gemini-2.5-flash": (0.0003, 0.0025),
    "gemini-2.0-flash": (0.0001, 0.0004),
    "gemini-1.5-pro": (0.00125, 0.005),
    "gemini-1.5-flash": (0.000075, 0.0003),
    # Mistral
    "mistral-large": (0.002, 0.006),
    "mistral-small": (0.0001, 0.0003),
}


BUILTIN_PROMPT = {model: prices[0] for model, prices in BUILTIN_PER_1K.items()}
BUILTIN_COMPLETION = {model: prices[1] for model, prices in BUILTIN_PER_1K.items()}
MEMO_SIZE = 1024
"""Model names priced and remembered at most; the names come from clients, so the memo is
emptied when full rather than allowed to grow."""


def match(table: Mapping[str, float], model: str) -> tuple[str, float] | None:
    """The entry of `table` that prices `model`: its exact name, else its longest listed
    prefix that ends at a "-", after dropping a provider prefix; None when none is listed."""
    name = model.strip().lower()
    for candidate in (model, name, name.rsplit("/", 1)[-1]):
        if candidate in table:
            return candidate, table[candidate]
    name = name.rsplit("/", 1)[-1]
    best: str | None = None
    for key in table:
        if name.startswith(key + "-") and (best is None or len(key) > len(best)):
            best = key
    return (best, table[best]) if best is not None else None


def lookup(table: Mapping[str, float], model: str) -> float | None:
    found = match(table, model)
    return found[1] if found is not None else None


class Pricing:
    """Prices a hit's saved tokens: the closest name in `[costs]` or the built-in list (if on;
    `[costs]` wins on the same name, the longer name wins otherwise, so a configured "gpt-4o"
    does not price "gpt-4o-mini"), then `[costs]`'s "*"; 0 for a model none of them prices."""

    def __init__(self, prompt: Mapping[str, float], completion: Mapping[str, float], *,
                 builtin: bool = False) -> None:
        self.prompt = {k: v for k, v in prompt.items() if k != "*"}
        self.completion = {k: v for k, v in completion.items() if k != "*"}
        self.default = (prompt.get("*"), completion.get("*"))
        self.builtin = builtin
        self._memo: dict[str, tuple[float, float]] = {}

    @property
    def configured(self) -> bool:
        """Whether any model is priced at all (the dashboard says so when none is)."""
        return bool(self.builtin or self.prompt or self.completion
                    or any(v is not None for v in self.default))

    def per_1k(self, model: str) -> tuple[float, float]:
        """USD per 1,000 (prompt, completion) tokens of `model`."""
        found = self._memo.get(model)
        if found is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            found = self._memo[model] = (
                self._price(self.prompt, BUILTIN_PROMPT, self.default[0], model),
                self._price(self.completion, BUILTIN_COMPLETION, self.default[1], model))
        return found

    def _price(self, own: Mapping[str, float], listed: Mapping[str, float], default: float | None,
               model: str) -> float:
        mine = match(own, model)
        theirs = match(listed, model) if self.builtin else None
        if mine is not None and (theirs is None or len(mine[0]) >= len(theirs[0])):
            return mine[1]
        if theirs is not None:
            return theirs[1]
        return default if default is not None else 0.0

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p, c = self.per_1k(model)
        return (prompt_tokens * p + completion_tokens * c) / 1000.0
