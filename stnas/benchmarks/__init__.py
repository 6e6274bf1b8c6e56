"""Ground-truth benchmark tables and the mapping between their codes and our architectures.

:class:`NB201Table` reads NAS-Bench-201's table of the 15,625 cells of the ``nb201`` space
(``NB201Table.load(path).lookup(arch, "cifar10")``).
"""
from stnas.benchmarks.nb201 import METRICS, BenchmarkError, NB201Table, check_table_space, unique_string

__all__ = ["METRICS", "BenchmarkError", "NB201Table", "check_table_space", "unique_string"]
