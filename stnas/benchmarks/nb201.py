"""NAS-Bench-201's table (Dong & Yang, ICLR 2020; its topology part as NATS-Bench ships it): the test
accuracy after 200 epochs of every cell architecture of the ``nb201`` space, on three datasets.

The file is a CSV with one row per architecture and (at least) the columns ``CIFAR10TestAccuracy200Epochs``,
``CIFAR100TestAccuracy200Epochs``, ``ImageNetTestAccuracy200Epochs`` (accuracies in percent),
``ArchitectureString`` (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) and ``UniqueString``. For development it lies in
``../shared/data/nb201/nats_bench.csv``, never in the project. Metrics are named ``cifar10``,
``cifar100`` and ``imagenet16-120``.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from stnas.spaces.cell import CellArch
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import op_names

METRIC_COLUMNS = {"cifar10": "CIFAR10TestAccuracy200Epochs", "cifar100": "CIFAR100TestAccuracy200Epochs",
                  "imagenet16-120": "ImageNetTestAccuracy200Epochs"}
ARCH_COLUMN = "ArchitectureString"
UNIQUE_COLUMN = "UniqueString"
METRICS = tuple(METRIC_COLUMNS)


class BenchmarkError(ValueError):
    """A benchmark table that is missing or malformed, or a query it cannot answer; the message names the
    file (and the line, for a bad row)."""


def unique_string(arch: CellArch) -> str:
    """The ``UniqueString`` that NAS-Bench-201 gives ``arch``: equal for the architectures the benchmark
    counts as one (6,466 classes over its 15,625 cells).

    Its convention, as the column shows: node 0 is ``0``; per input of a node, ``#`` for a ``none`` edge or
    a source spelt exactly ``#``, the source's string itself for ``skip_connect``, else
    ``(<source>)@<op>``; a node is its inputs' strings sorted and joined by ``+``. It is coarser than the
    arch string and finer than :func:`stnas.spaces.cell.canonical_form`: each ``none`` input stays as a
    ``#`` term (so the zero cell has several spellings), and a ``skip_connect`` from a node with several
    terms sorts that node's string as one term (so equal sums can be spelt in different orders)."""
    spelt = ["0"]
    for dst in range(1, arch.nodes):
        inputs = []
        for src in range(dst):
            op, source = arch.op(dst, src), spelt[src]
            if op == "none" or source == "#":
                inputs.append("#")
            elif op == "skip_connect":
                inputs.append(source)
            else:
                inputs.append(f"({source})@{op}")
        spelt.append("+".join(sorted(inputs)))
    return spelt[-1]


class NB201Table:
    """The rows of a NAS-Bench-201 table, looked up by architecture. Build it with :meth:`load`."""

    def __init__(self, path: Path, archs: tuple[CellArch, ...], accuracies: dict[str, tuple[float, ...]],
                 unique: tuple[str, ...]):
        self.path = path
        self.archs = archs
        self._accuracies = accuracies
        self._unique = unique
        self._row = {a: k for k, a in enumerate(archs)}

    # ---------------------------------------------------------------- reading

    @classmethod
    def load(cls, path) -> "NB201Table":
        """Read and check the whole file; any problem is one BenchmarkError naming the file and line."""
        path = Path(path)
        if not path.is_file():
            raise BenchmarkError(f"NAS-Bench-201 table {path} does not exist" if not path.exists()
                                 else f"NAS-Bench-201 table {path} is not a file")
        try:
            with path.open(newline="", encoding="utf-8") as f:
                return cls._read(path, csv.reader(f))
        except UnicodeDecodeError as e:
            raise BenchmarkError(f"NAS-Bench-201 table {path}: not a UTF-8 text file ({e})") from None
        except csv.Error as e:
            raise BenchmarkError(f"NAS-Bench-201 table {path}: not a readable CSV file ({e})") from None

    @classmethod
    def _read(cls, path: Path, reader) -> "NB201Table":
        header = next(reader, None)
        if header is None:
            raise BenchmarkError(f"NAS-Bench-201 table {path} is empty (no header line)")
        wanted = [*METRIC_COLUMNS.values(), ARCH_COLUMN, UNIQUE_COLUMN]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise BenchmarkError(f"{path}, line 1: missing column(s) {', '.join(missing)} (the header has "
                                 f"{', '.join(header)})")
        at = {c: header.index(c) for c in wanted}
        archs, unique, first_line = [], [], {}
        values = {m: [] for m in METRIC_COLUMNS}
        nodes = None
        cell_ops = set(op_names("cell"))
        for row in reader:
            line = reader.line_num
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise BenchmarkError(f"{path}, line {line}: {len(row)} field(s), the header has {len(header)}")
            for metric, column in METRIC_COLUMNS.items():
                text = row[at[column]]
                try:
                    value = float(text)
                except ValueError:
                    value = math.nan
                if not 0.0 <= value <= 100.0:  # also refuses NaN
                    raise BenchmarkError(f"{path}, line {line}: column {column}: {text!r} is not an accuracy in "
                                         f"percent (a number in [0, 100])")
                values[metric].append(value)
            try:
                arch = CellArch.from_nb201(row[at[ARCH_COLUMN]])
            except SpaceError as e:
                raise BenchmarkError(f"{path}, line {line}: column {ARCH_COLUMN}: {e}") from None
            for op in arch.ops:
                if op not in cell_ops:
                    raise BenchmarkError(f"{path}, line {line}: column {ARCH_COLUMN}: unknown cell op {op!r} "
                                         f"(cell ops: {', '.join(op_names('cell'))})")
            if nodes is None:
                nodes = arch.nodes
            elif arch.nodes != nodes:
                raise BenchmarkError(f"{path}, line {line}: column {ARCH_COLUMN}: a cell of {arch.nodes} nodes, "
                                     f"the rows before it have {nodes}")
            if arch in first_line:
                raise BenchmarkError(f"{path}, line {line}: architecture {arch} is already on line {first_line[arch]}")
            first_line[arch] = line
            archs.append(arch)
            unique.append(row[at[UNIQUE_COLUMN]])
        if not archs:
            raise BenchmarkError(f"NAS-Bench-201 table {path} has a header but no rows")
        return cls(path, tuple(archs), {m: tuple(v) for m, v in values.items()}, tuple(unique))

    # ---------------------------------------------------------------- queries

    def check_metric(self, metric) -> str:
        """``metric`` if the table has it, else a BenchmarkError listing the metrics."""
        if metric not in METRIC_COLUMNS:
            raise BenchmarkError(f"NAS-Bench-201 table {self.path}: unknown metric {metric!r} "
                                 f"(metrics: {', '.join(METRICS)})")
        return metric

    def _index(self, arch) -> int:
        if isinstance(arch, str):
            try:
                arch = CellArch.from_nb201(arch)
            except SpaceError as e:
                raise BenchmarkError(f"NAS-Bench-201 table {self.path}: {e}") from None
        if not isinstance(arch, CellArch):
            raise BenchmarkError(f"NAS-Bench-201 table {self.path}: looks up a CellArch or an arch string, got "
                                 f"{type(arch).__name__}")
        row = self._row.get(arch)
        if row is None:
            raise BenchmarkError(f"NAS-Bench-201 table {self.path}: architecture {arch} is not in the table "
                                 f"({len(self)} rows)")
        return row

    def lookup(self, arch, metric: str) -> float:
        """The test accuracy (percent) of ``arch`` (a CellArch or an arch string) on ``metric``."""
        self.check_metric(metric)
        return self._accuracies[metric][self._index(arch)]

    def unique_string(self, arch) -> str:
        """The file's ``UniqueString`` of ``arch`` (see :func:`unique_string` for what it means)."""
        return self._unique[self._index(arch)]

    def accuracies(self, metric: str) -> tuple[float, ...]:
        """Every row's accuracy on ``metric``, in the order of :attr:`archs`."""
        return self._accuracies[self.check_metric(metric)]

    def best(self, metric: str) -> tuple[CellArch, float]:
        """The architecture with the highest accuracy on ``metric`` (the first in file order on ties) and
        that accuracy."""
        values = self.accuracies(metric)
        row = max(range(len(values)), key=values.__getitem__)
        return self.archs[row], values[row]

    def __len__(self) -> int:
        return len(self.archs)

    def __iter__(self) -> Iterator[CellArch]:
        return iter(self.archs)

    def __contains__(self, arch) -> bool:
        return arch in self._row

    def __repr__(self) -> str:
        return f"NB201Table({str(self.path)!r}, {len(self)} architectures)"


def check_table_space(space) -> None:
    """A BenchmarkError unless ``space``'s cells are NAS-Bench-201's (the same nodes and ops, any
    skeleton): the only cells the table answers for."""
    from stnas.spaces import Space

    ref = Space.load("nb201")
    if getattr(space, "nodes", None) != ref.nodes or tuple(getattr(space, "ops", ())) != tuple(ref.ops):
        raise BenchmarkError(f"--benchmark: NAS-Bench-201's table answers for cells of {ref.nodes} nodes with ops "
                             f"{list(ref.ops)}; space {space.name!r} differs")
