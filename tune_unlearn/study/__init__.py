"""Running a study: the Optuna objective, the trial runner, workers, warm starts,
request streams and method comparisons.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
