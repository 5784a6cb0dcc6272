"""Garbage-collector settings for a long-running proxy.

After start-up has loaded the encoder and the index, the process holds about 200,000
objects the collector tracks (modules, the tokenizer, onnxruntime's bindings), and every
full collection walks all of them: on 2 cores that took 90-180 ms, every few seconds under
write load, with the event loop (and every thread waiting for the GIL) stopped meanwhile.
None of those objects ever becomes garbage. `gc.freeze()` moves them to a permanent
generation that collections never walk, so a full collection only visits what the proxy
allocated since; before/after figures: loadtest/results/stalls_<machine>.json ("gc").
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 700
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def tune_gc() -> None:
    """Call once, when start-up has loaded what lives as long as the process."""
    gc.collect(1)  # the young garbage of loading is freed, not frozen
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)  # read at call time
    log.info("garbage collector: %d start-up objects frozen, thresholds %s",
             gc.get_freeze_count(), gc.get_threshold())
