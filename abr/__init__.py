"""Adaptive bitrate, pure: CMCD parsing, session folding, throughput estimators, the
guidance policy and its rendering into player channels, traces, the simulator and
ladder tuning.

Nothing here does I/O or reads a clock: no files, sockets or environment, and the
time is an argument like every other input.  ``abr`` imports only
:mod:`cadenza.manifests`, numpy and the standard library (``tests/test_layering.py``
checks it).  The origin's HTTP edge and the ``cadenza abr`` / ``cadenza ladder``
commands (:mod:`cadenza.abr_io` reads their files) feed every input in.
"""
