"""Benchmarks of the MagNet Triton bundle: perf_analyzer sweeps and a side-by-side speed table.

Run from the repository root (``python -m benchmarks.run_all``, or ``benchmarks/run_all.sh``); the
modules are not part of the installed package, because measuring is a stage of its own (design.md).
"""
