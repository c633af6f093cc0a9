"""One configuration on a study's fixed inputs: those inputs as values (the experiment), running
one configuration and measuring it, and the collapse guard that stops a collapsing run.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
