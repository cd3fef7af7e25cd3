"""Seeing a run: task and attempt records (the same shape for every backend), what they add up
to (:mod:`.records`), how they read as text (:mod:`.text`) and as an HTML report
(:mod:`.html`), and what the nodes cost (:mod:`.pricing`).

The engine (:mod:`batchspec.engine.observe`) gets records from a backend and hands them here;
nothing in this package talks to a backend.
"""
