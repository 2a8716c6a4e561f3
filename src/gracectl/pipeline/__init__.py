"""The CI walk: the ordered stages (the one place gracectl.image and gracectl.tags meet), a run's work directory,
and doctor (does this node have what the stages need)."""
