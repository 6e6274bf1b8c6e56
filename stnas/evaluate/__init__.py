"""Scorers over many architectures in one call: the SGLD snapshot ensemble of a single-path supernet
(:mod:`stnas.evaluate.snapshot`), a benchmark-table lookup (:mod:`stnas.evaluate.table`); and the rank
metrics that compare any scores with a ground truth (:mod:`stnas.evaluate.rank`)."""
