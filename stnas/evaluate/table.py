"""A benchmark table as an evaluator: the ground-truth accuracy of many architectures in one call, with
the same ``score_many`` interface as the supernet's snapshot evaluator, so a strategy can search against
the table (the benchmark's cost-free ground truth) exactly as it searches against a supernet."""
from __future__ import annotations

from collections.abc import Sequence

from stnas.benchmarks.nb201 import NB201Table


class TableEvaluator:
    """Scores an architecture by its accuracy (percent) on ``metric`` in ``table`` (an NB201Table or the
    path of its CSV file)."""

    def __init__(self, table: NB201Table | str, metric: str):
        self.table = table if isinstance(table, NB201Table) else NB201Table.load(table)
        self.metric = self.table.check_metric(metric)

    def score_many(self, archs: Sequence, desc: str = "") -> list[float]:
        """The table accuracy of every architecture, in order. ``desc`` (a progress label for the
        evaluators that take time) is accepted so that callers can swap evaluators; a lookup needs none."""
        return [self.table.lookup(a, self.metric) for a in archs]

    def describe(self) -> dict:
        return {"evaluator": "table", "benchmark": "NAS-Bench-201", "path": str(self.table.path),
                "metric": self.metric, "architectures": len(self.table)}
