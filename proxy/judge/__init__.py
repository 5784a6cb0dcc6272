"""The judge: whether the answer cached for one prompt may be served for another.

`Judge` (judge.py) is the one entry point, used by the proxy's pipeline and by `semcache
eval`; its parts are the thresholds (thresholds.py, observations.py), the near-miss checks
(checks.py, code.py) and the pair model (model.py, text.py). Nothing here speaks HTTP.
"""

from .judge import Ask, Candidate, Judge, JudgeSession, Verdict, needs_model, rule
from .settings import JudgeSettings

__all__ = ["Ask", "Candidate", "Judge", "JudgeSession", "JudgeSettings", "Verdict", "needs_model",
           "rule"]
