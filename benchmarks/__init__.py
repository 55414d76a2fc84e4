"""The benchmark suite behind ``make bench`` (``python -m benchmarks``).

Every figure for the bridge sits next to the same workload on a bare server
(:mod:`benchmarks.bare_grpc`, :mod:`benchmarks.bare_stdio`) measured in the same
run, with the ratio. See ``docs/performance.md`` for the latest results.
"""
