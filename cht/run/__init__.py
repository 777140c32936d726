"""A training run: what it records (:mod:`cht.run.record`) and whether a job resumes its checkpoint
(:mod:`cht.run.checkpoint`)."""
