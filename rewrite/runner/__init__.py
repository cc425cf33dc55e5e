"""Run plumbing: the Lightning module that drives a strategy, the callbacks that score and draw, the run's files."""
