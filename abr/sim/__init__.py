"""A trace-driven, chunk-level ABR player simulator, the policies it runs, and QoE.

- :mod:`~cadenza.abr.sim.link`: a throughput trace turned into download times (RTT included);
- :mod:`~cadenza.abr.sim.session`: what a policy sees, the policy protocol, the session loop;
- :mod:`~cadenza.abr.sim.qoe`: QoE_lin, perceptual QoE and the session metrics;
- :mod:`~cadenza.abr.sim.players`: hls.js and dash.js, plain and guided;
- :mod:`~cadenza.abr.sim.baselines`: BBA-0, robust MPC, a fixed plan;
- :mod:`~cadenza.abr.sim.origin`: a player that fetches what the origin's controller decides;
- :mod:`~cadenza.abr.sim.optimum`: the offline optimum;
- :mod:`~cadenza.abr.sim.evaluation`: every policy over a trace set, with leave-one-out guidance.

Pure and deterministic: no I/O, no randomness, no clocks.
"""
