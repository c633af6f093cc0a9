"""The study file: its schema, the reader, the generated reference page, storage URLs.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
