"""headprobe's probing stage: what each head's keys and queries encode, and case studies.

- ``probing.grid``: fit and score probes from an activation store (the whole grid, or
  one head with :func:`probing.grid.fit_probe`);
- ``probing.solvers``: the logistic-regression solvers (batched ``fast``, ``sklearn``);
- ``probing.labels``: store tags folded into probe classes;
- ``probing.metrics``: per-tag scores and bootstrap intervals over stories;
- ``probing.controls``: majority, shuffled-label, control-task, random-weights and bootstrap
  controls, and selectivity;
- ``probing.mdl``: minimum description length probing (the online code);
- ``probing.results``: the probe-grid results on disk and their reader;
- ``probing.export``, ``probing.top``: other layouts of the results, and the best cells;
- ``probing.studies``: the case studies, written through ``probing.study_io``.
"""
