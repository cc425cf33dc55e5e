"""Benchmarks over runs: the strategy benchmark, sweep tables, Pareto plots and re-scoring saved edits."""
