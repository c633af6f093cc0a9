"""Scoring a model: one batched evaluation pass, the metrics, the per-example
forgetting score.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
