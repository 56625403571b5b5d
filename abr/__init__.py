"""Adaptive bitrate: pure estimators, the steering policy, the simulator.

Nothing here does I/O or reads global state; the origin's HTTP edge and the
``cadenza abr`` / ``cadenza ladder`` commands feed every input in.
"""
