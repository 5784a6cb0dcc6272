"""Garbage-collector settings for a long-running proxy.

Once start-up has loaded the encoder, the verifier and the index, the process holds about
200,000 objects the collector tracks (modules and what the libraries load), and every full
collection walks all of them, with the event loop (and every thread waiting for the GIL)
stopped meanwhile. None of them ever becomes garbage. `gc.freeze()` moves them to a
permanent generation that collections never walk. What remains to walk is what the proxy
keeps after start-up (its caches: 14k objects after warm-up, 90k after 30 s of writes).

Measured under write load (8 concurrent misses with write-backs, 31 s, 2-core machine;
loadtest/results/stalls_cpu-2core.json, "gc"; CPU time of the collection, wall time in
brackets):
- defaults, no freeze: one full collection of 132 ms (276 ms), young ones up to 3.1 ms;
  probe p99 61 ms, worst 293 ms;
- freeze, default thresholds (700, 10, 10): one full collection of 26 ms (29 ms); p99 36 ms;
- freeze, (2000, 10, 10): middle collections up to 7.6 ms; p99 35 ms;
- freeze, (700, 10, 100), what this module sets: no full collection in the run, young
  ones up to 2.9 ms; p99 29 ms, worst 48 ms.
A larger first threshold only makes each young collection longer; a larger last one makes
the full collections, which now cost what the caches hold, ten times rarer.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 700
"""Python's default: young collections stay below ~1 ms of CPU."""
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 100
"""Ten times Python's default: a full collection after 100 middle ones, not 10."""


def tune_gc() -> None:
    """Call once, when start-up has loaded what lives as long as the process. Later calls
    (a test process that builds many apps) change nothing: freezing again would also freeze
    whatever the earlier apps left behind."""
    if gc.get_freeze_count():
        return
    gc.collect(1)  # the young garbage of loading is freed, not frozen
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)  # read at call time
    log.info("garbage collector: %d start-up objects frozen, thresholds %s",
             gc.get_freeze_count(), gc.get_threshold())
