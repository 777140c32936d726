"""A training run: what it records (:mod:`cht.run.record`)."""
