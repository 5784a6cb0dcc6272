"""The judge's settings: the `[judge]` section of config.toml."""

from __future__ import annotations

from dataclasses import dataclass

ALL_CHECKS = ("numbers", "negation", "entities", "order", "antonyms", "languages", "format",
              "dates", "units", "code", "scope")
DEFAULT_CHECKS = ALL_CHECKS[:-1]
"""`scope` is off by default: on Quora duplicates it fired as often as on non-duplicates."""


@dataclass(frozen=True, kw_only=True)
class JudgeSettings:
    threshold: float = 0.92
    """Minimum cosine similarity of a semantic hit that no pair model reads: with `model`
    off, or a request that asks for similarity alone (`X-Semcache-Judge: similarity`). While
    a configured model is still loading, no bar under this one is served."""

    checks: tuple[str, ...] = DEFAULT_CHECKS
    """Cheap near-miss checks every semantic candidate must pass (judge/checks.py)."""

    soft_checks: tuple[str, ...] = ("negation", "dates")
    """Checks that, with the pair model reading the candidate, do not stop it outright but
    ask more of the model (`model_min_checked`): on the hand-written dev split they fire on
    paraphrases about as often as on near misses ("I don't want to bother you, but ...",
    "my flight is tomorrow: how early ..."). Without the model every check stops a candidate."""

    model_min_checked: float = 0.95
    """Pair-model probability a candidate needs when a soft check fired on it."""

    model: bool = True
    """Ask the pair model (a cross-encoder reading both prompts) about every candidate in
    [model_floor, verify_below): near misses score high on cosine alone."""

    model_path: str = ""
    """Folder of the pair model's ONNX file and tokenizer; empty: the shipped one for the
    device (judge/weights/: the distilled student on a CPU)."""

    teacher_max_chars: int = 200
    """On a CPU, pairs of at most this many characters (both prompts) are read by the
    teacher where it is built, longer ones by the student: the teacher is the better judge
    and costs about four times as much, growing with the text. On a GPU the teacher reads
    every pair. 0: the student alone on a CPU."""

    model_floor: float = 0.30
    """With the model loaded, the lowest similarity it is asked about: the bar a lookup
    starts from, since the model, not the cosine, decides above it (the encoder scores
    typo'd paraphrases as low as 0.2-0.5)."""

    model_min: float = 0.8
    """Pair-model probability a candidate needs to be served."""

    verify_below: float = 1.0
    """Candidates at or above this similarity are served without asking the model (1.0:
    every candidate is read; prompts that differ only past the encoder's 256 tokens have a
    cosine of 1.0)."""

    max_wrong_rate: float = 0.05
    """Bound on the wrong-hit rate that adaptive thresholds keep: an entry's (and a scope's)
    threshold is the lowest at which the wrong-hit rate among its observed semantic hits,
    bounded with 95% confidence, stays within it (judge/thresholds.py:entry_threshold)."""

    verify_sample: float = 0.0
    """Fraction of semantic candidates checked in the background against the upstream's
    answer and recorded as observations: served hits (asked again) and candidates turned down
    by their adaptive threshold alone (compared with the miss's answer); every one while the
    scope has fewer than MIN_EVIDENCE observations. 0: off."""

    answer_similarity: float = 0.9
    """Two answers count as the same when their normalised texts are equal or the encoder's
    cosine of them reaches this (sampled verification)."""
