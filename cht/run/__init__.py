"""A training run: its lifecycle for single and grouped runs (:mod:`cht.run.lifecycle`), what it records
(:mod:`cht.run.record`) and whether a job resumes its checkpoint (:mod:`cht.run.checkpoint`)."""
