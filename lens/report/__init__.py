"""Aggregation of per-fold task results into one cross-validation report (`lens report`)."""
