"""One configuration on a study's fixed inputs: those inputs and the reference models as two
values (``inputs.py``, ``study_references.py``), running one configuration on them and
measuring it, and the collapse guard that stops a collapsing run.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
