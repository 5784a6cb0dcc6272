"""The cache pipeline: intake -> lookup -> judge -> serve (replay) or forward -> write back.

service.py orchestrates; intake.py (reading and bounding the body), admission.py (the bound on
requests in flight), lookup.py (exact tier, semantic candidates), replay.py (hits),
flight.py (single-flight: identical misses share one upstream call), forward.py (the upstream
call and its relay to the clients that follow it, streaming or not), writeback.py (storing
answers), sampling.py (background checks behind adaptive thresholds) and sse.py (server-sent
events) do the work.
"""
