"""proxy/gc_tuning.py, in a child interpreter (freezing the test process's objects would
change every later test): start-up objects frozen once, thresholds set, a second call inert."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json
from semcache.proxy import gc_tuning
loaded = [[i] for i in range(50_000)]  # what start-up keeps for good
before = len(gc.get_objects())
gc_tuning.tune_gc()
frozen, walked = gc.get_freeze_count(), len(gc.get_objects())
late = [[i] for i in range(1000)]
gc_tuning.tune_gc()
print(json.dumps({"before": before, "frozen": frozen, "walked": walked,
                  "frozen_after_second_call": gc.get_freeze_count(),
                  "threshold": gc.get_threshold(),
                  "expected": [gc_tuning.GEN0_THRESHOLD, gc_tuning.GEN1_THRESHOLD,
                               gc_tuning.GEN2_THRESHOLD]}))
"""


def test_tune_gc_freezes_start_up_once_and_sets_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=60, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["frozen"] >= 50_000 and got["walked"] < 100  # collections no longer walk them
    assert got["frozen_after_second_call"] == got["frozen"]  # the late objects stay young
    assert list(got["threshold"]) == got["expected"]
