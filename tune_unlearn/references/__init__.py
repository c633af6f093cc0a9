"""The reference models a verdict rests on: the forget request, the original and the
retrains (trained, cached, or a bank), their prediction band, and the recovery attacks
measured against them.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
