"""The MLflow side: runs, the parent run's lifecycle, the model registry, model files.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
