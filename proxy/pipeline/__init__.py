"""The cache pipeline: lookup -> judge -> serve (replay) or forward -> write back.

service.py orchestrates; lookup.py (exact tier, semantic candidates), replay.py (hits),
forward.py (the upstream, streaming or not), writeback.py (storing answers), sampling.py
(background checks behind adaptive thresholds) and sse.py (server-sent events) do the work.
"""
