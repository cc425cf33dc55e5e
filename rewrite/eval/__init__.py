"""Scoring an edit: the evaluator, rule metrics, the before/after grid and the scorer protocol."""
