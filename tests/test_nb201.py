"""NAS-Bench-201: the cell space and its arch strings, isomorphic cells, the standalone network's costs
against hook counts and published figures, and the benchmark table as a reader and as an evaluator.

Tests that read the real table skip when ``../shared/data/nb201/nats_bench.csv`` is absent; the reader's
error handling is tested on small tables written here.
"""
import copy
import csv
import json
import random
from pathlib import Path

import pytest
import torch
from test_spaces import hook_count

from stnas.benchmarks import BenchmarkError, NB201Table, unique_string
from stnas.evaluate.table import TableEvaluator
from stnas.spaces import Budget, CellArch, CellSpace, Space, SpaceError
from stnas.supernet.cell_blocks import Cell, CellNet, Zero

TABLE = Path(__file__).resolve().parents[2] / "shared/data/nb201/nats_bench.csv"
needs_table = pytest.mark.skipif(not TABLE.is_file(), reason=f"the NAS-Bench-201 table {TABLE} is absent "
                                 "(it lies in ../shared next to the checkout)")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
ALL_CONV3 = CellArch(("nor_conv_3x3",) * 6)
ALL_NONE = CellArch(("none",) * 6)


@pytest.fixture(scope="module")
def nb201() -> CellSpace:
    return Space.load("nb201")


@pytest.fixture(scope="module")
def every_arch(nb201) -> list:
    return list(nb201.enumerate())


@pytest.fixture(scope="module")
def table_rows() -> list:
    """The real table read with the csv module alone: the reference for the reader."""
    with TABLE.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return NB201Table.load(TABLE)


def _nb201_dict(**changes) -> dict:
    data = copy.deepcopy(Space.load("nb201").to_dict())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return data


# ---------------------------------------------------------------------- the space and its arch strings

def test_nb201_space_has_one_decision_per_edge_in_arch_string_order(nb201):
    assert nb201.count_architectures() == 5 ** 6 == 15_625
    assert nb201.edges == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert [d.name for d in nb201.decisions()] == [f"ops[{k}]" for k in range(6)]
    assert [d.where for d in nb201.decisions()] == ["edge 1<-0", "edge 2<-0", "edge 2<-1", "edge 3<-0", "edge 3<-1",
                                                    "edge 3<-2"]
    assert all(d.choices == OPS for d in nb201.decisions())
    # The arch string lists node 1's inputs, then node 2's, then node 3's, each by source node.
    arch = CellArch.from_nb201("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert arch.op(1, 0) == "nor_conv_3x3" and arch.op(2, 1) == "avg_pool_3x3" and arch.op(3, 1) == "nor_conv_1x1"
    assert nb201.genes(arch) == ("nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "none")


def test_skeleton_structure_is_nb201s(nb201):
    assert nb201.stage_channels == (16, 32, 64)
    assert [(c.stage, c.channels, c.size) for c in nb201.cells] == [(s, 16 * 2 ** s, 32 // 2 ** s)
                                                                    for s in range(3) for _ in range(5)]
    assert [(r.cin, r.cout, r.in_size, r.out_size) for r in nb201.reductions] == [(16, 32, 32, 16), (32, 64, 16, 8)]


def test_arch_strings_and_json_round_trip_for_every_architecture(every_arch):
    strings = [a.to_nb201() for a in every_arch]
    assert len(set(strings)) == len(every_arch) == 15_625
    for arch, text in zip(every_arch, strings):
        back = CellArch.from_nb201(text)
        assert back == arch and hash(back) == hash(arch)
    for arch in random.Random(0).sample(every_arch, 50):
        assert CellArch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@pytest.mark.parametrize("nodes", [2, 3, 5, 6])
def test_arch_strings_of_other_node_counts_round_trip(nodes):
    rng = random.Random(nodes)
    for _ in range(20):
        arch = CellArch(tuple(rng.choice(OPS) for _ in range(nodes * (nodes - 1) // 2)))
        text = arch.to_nb201()
        groups = text.split("+")
        assert len(groups) == nodes - 1
        assert [g.count("~") for g in groups] == list(range(1, nodes))
        assert CellArch.from_nb201(text) == arch and arch.nodes == nodes


def test_architecture_json_forms_and_exported_files():
    text = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|"
    arch = CellArch.from_nb201(text)
    assert CellArch.from_dict({"nb201": text}) == arch
    assert CellArch.from_dict({"ops": list(arch.ops)}) == arch
    assert CellArch.from_dict({"space": "nb201", "arch": arch.to_dict()}) == arch
    assert Space.load("nb201").arch_from_dict({"nb201": text}) == arch
    with pytest.raises(SpaceError, match="disagree"):
        CellArch.from_dict({"ops": ["none"] * 6, "nb201": text})
    with pytest.raises(SpaceError, match=r"unknown field\(s\) \['branches'\]"):
        CellArch.from_dict({"ops": ["none"] * 6, "branches": []})
    with pytest.raises(SpaceError, match="expected 'ops'.*or 'nb201'"):
        CellArch.from_dict({})


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    (" |none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "whitespace"),
    ("none~0", r"node 1: 'none~0' is not of the form"),
    ("|none~0|+|none~0|", "node 2 has 1 input"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|", "node 3 has 2 input"),
    ("|none~1|", r"node 1, input 0: 'none~1' comes from node '1', expected 0"),
    ("|none~0|+|none~1|none~0|", r"node 2, input 0: 'none~1' comes from node '1'"),
    ("|none0|", r"'none0' is not 'op~source'"),
    ("|~0|", r"'~0' is not 'op~source'"),
    ("|none~0|++|none~0|none~1|", "node 2: '' is not of the form"),
    (5, "expected a string, got int"),
])
def test_bad_arch_strings_give_one_clear_error(text, message):
    with pytest.raises(SpaceError, match=message):
        CellArch.from_nb201(text)


def test_architectures_outside_the_space_name_the_edge(nb201):
    with pytest.raises(SpaceError, match=r"ops\[2\]: 'mb_k3_e3' is not a candidate of edge 2<-1"):
        nb201.arch_from_nb201("|none~0|+|none~0|mb_k3_e3~1|+|none~0|none~1|none~2|")
    with pytest.raises(SpaceError, match=r"arch.ops has 3 entries, space 'nb201' has 6 edges \(4 nodes\)"):
        nb201.validate(CellArch(("none",) * 3))
    with pytest.raises(SpaceError, match="arch.ops has 5 entries: a cell of n nodes"):
        CellArch(("none",) * 5)
    with pytest.raises(SpaceError, match="takes a CellArch"):
        nb201.validate(Space.load("demo").smallest())


@pytest.mark.parametrize("changes,message", [
    ({"cell__ops": ["none", "conv9"]}, r"'cell.ops\[1\]': unknown op 'conv9'"),
    ({"cell__ops": ["none", "mb_k3_e3"]}, r"'cell.ops\[1\]': 'mb_k3_e3' is a chain op, not a cell op"),
    ({"cell__ops": ["none", "none"]}, "'cell.ops' lists an op twice"),
    ({"cell__ops": []}, "'cell.ops' must be a non-empty list"),
    ({"cell__nodes": 1}, "'cell.nodes' must be an integer >= 2"),
    ({"skeleton__channels": 0}, "'skeleton.channels' must be an integer >= 1"),
    ({"skeleton__channels": "16"}, "'skeleton.channels' must be an integer"),
    ({"skeleton__cells_per_stage": True}, "'skeleton.cells_per_stage' must be an integer"),
    ({"skeleton__depth": 3}, r"'skeleton' has unknown field\(s\) \['depth'\]"),
    ({"input__resolution": 30}, "'input.resolution' must be divisible by 2\\^2 = 4"),
    ({"num_classes": 0}, "'num_classes' must be an integer >= 1"),
    ({"cell": [4]}, "'cell' must be a mapping"),
    ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
])
def test_invalid_cell_space_files_name_the_field(changes, message):
    with pytest.raises(SpaceError, match=message):
        Space.from_dict(_nb201_dict(**changes))


def test_missing_cell_space_fields_are_named():
    data = _nb201_dict()
    del data["skeleton"]["cells_per_stage"]
    with pytest.raises(SpaceError, match="'skeleton' is missing 'cells_per_stage'"):
        Space.from_dict(data)
    data = _nb201_dict()
    del data["cell"]
    with pytest.raises(SpaceError, match="missing field 'cell'"):
        Space.from_dict(data)


@pytest.mark.parametrize("name", ["nb201", "nb201-demo"])
def test_builtin_cell_spaces_round_trip_through_their_files(name):
    space = Space.load(name)
    assert isinstance(space, CellSpace)
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_cost_ranges_equal_brute_force_over_every_architecture(nb201, every_arch):
    costs = [nb201.cost(a) for a in every_arch]
    assert (min(c.madds for c in costs), max(c.madds for c in costs)) == nb201.madds_range()
    assert (min(c.params for c in costs), max(c.params for c in costs)) == nb201.params_range()


def test_sampling_and_mutation_stay_in_the_space_and_budget(nb201):
    rng = random.Random(5)
    lo, hi = nb201.madds_range()
    budget = Budget(madds=lo + 0.3 * (hi - lo))
    for _ in range(30):
        a = nb201.sample(rng, budget)
        assert nb201.madds(a) <= budget.madds
        m = nb201.mutate(a, rng, prob=0.1)
        assert m != a and nb201.validate(m) is m


# ---------------------------------------------------------------------- isomorphic cells

_P = 2 ** 61 - 1  # a prime: exact arithmetic, so sums are order-free and equal values are equal


def _function_fingerprint(arch: CellArch, points: int = 3) -> tuple:
    """The cell as a function, evaluated: every op a random quadratic map f(v) = a v^2 + b v mod P (opaque,
    nonlinear, f(0) = 0, so an op of a zero input adds nothing), none = 0, skip = the identity, a node
    the sum of its inputs. Two cells compute the same function iff their values agree (with probability
    ~1 at random points): an independent reference for the canonical form, sharing no code with it."""
    rng = random.Random(201)
    maps = {op: (rng.randrange(1, _P), rng.randrange(1, _P)) for op in ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")}
    values = []
    for x in [rng.randrange(1, _P) for _ in range(points)]:
        nodes = [x]
        for dst in range(1, arch.nodes):
            total = 0
            for src in range(dst):
                op, v = arch.op(dst, src), nodes[src]
                if op == "skip_connect":
                    total += v
                elif op != "none":
                    a, b = maps[op]
                    total += a * v * v + b * v
            nodes.append(total % _P)
        values.append(nodes[-1])
    return tuple(values)


def _partition(archs, key) -> set:
    groups = {}
    for a in archs:
        groups.setdefault(key(a), set()).add(a)
    return {frozenset(g) for g in groups.values()}


def test_canonical_form_groups_cells_exactly_as_the_functions_they_compute(nb201, every_arch):
    by_form = _partition(every_arch, nb201.canonical)
    assert by_form == _partition(every_arch, _function_fingerprint)
    assert len(by_form) == 4_930
    assert nb201.canonical(ALL_NONE) == "0"
    dead_conv = CellArch.from_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert nb201.canonical(dead_conv) == "x"


def test_canonical_form_ignores_sum_order_skip_chains_and_dead_nodes(nb201):
    same = [  # x + conv3(x), spelt four ways: direct; through a skip chain; with a dead node; sum reordered
        "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|",
        "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|skip_connect~1|skip_connect~2|",
        "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|skip_connect~2|",
        "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|skip_connect~1|skip_connect~2|",
    ]
    forms = {nb201.canonical(CellArch.from_nb201(s)) for s in same}
    assert len(forms) == 1, forms
    # ... but the op and its input matter.
    for other in ["|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|",
                  "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"]:
        assert nb201.canonical(CellArch.from_nb201(other)) not in forms


def test_the_benchmark_counts_6466_unique_cells(every_arch):
    # NAS-Bench-201's count of unique architectures (its paper and its table's UniqueString column).
    assert len({unique_string(a) for a in every_arch}) == 6_466


@needs_table
def test_unique_string_reproduces_the_tables_column(table_rows):
    for row in table_rows:
        assert unique_string(CellArch.from_nb201(row["ArchitectureString"])) == row["UniqueString"]
    assert len({row["UniqueString"] for row in table_rows}) == 6_466


@needs_table
def test_table_classes_are_finer_than_canonical_classes(nb201, table_rows):
    archs = [CellArch.from_nb201(r["ArchitectureString"]) for r in table_rows]
    by_table = _partition(archs, lambda a, u={CellArch.from_nb201(r["ArchitectureString"]): r["UniqueString"]
                                              for r in table_rows}: u[a])
    assert len(by_table) == 6_466
    # Every class of the table lies within one canonical class: the table never merges cells that compute
    # different functions; it only keeps apart some that compute the same one.
    form = {a: nb201.canonical(a) for a in archs}
    assert all(len({form[a] for a in group}) == 1 for group in by_table)
    # For instance the zero cell, which the table spells in several ways:
    zero = {r["UniqueString"] for r, a in zip(table_rows, archs) if form[a] == "0"}
    assert {"#+#+#", "#+#+#+#"} <= zero


# ---------------------------------------------------------------------- the standalone network

def _cost_probe_archs(space, n_random: int):
    rng = random.Random(3)
    return ([space.draw(rng) for _ in range(n_random)] + [ALL_CONV3, ALL_NONE] +
            # node 1 and 2 are zero and still feed convs, which run on zeros and count
            [CellArch.from_nb201("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|")])


@pytest.mark.parametrize("name,n_random", [("nb201", 3), ("nb201-demo", 8)])
def test_analytic_cost_of_cellnet_equals_hook_count(name, n_random):
    space = Space.load(name)
    for arch in _cost_probe_archs(space, n_random):
        assert hook_count(CellNet(space, arch), space.resolution) == space.cost(arch), arch


# NAS-Bench-201-v1_1-096897 (the benchmark's own API file), min and max over all 15,625 architectures of
# 'params' (MB) and 'flop' (M) per dataset, as printed by public scripts reading its JSON export (e.g. an
# EvoXBench-based `min_max_values` table: cifar10 params [0.073306, 1.531546], flops [7.78305, 220.11969]).
# The smallest is the all-none cell, the largest the all-conv3x3 one.
@pytest.mark.parametrize("resolution,classes,params,flops", [
    (32, 10, (0.073306, 1.531546), (7.78305, 220.11969)),       # CIFAR-10
    (32, 100, (0.079156, 1.537396), (7.7889, 220.12554)),       # CIFAR-100
    (16, 120, (0.080456, 1.538696), (1.9534, 55.03756)),        # ImageNet16-120
], ids=["cifar10", "cifar100", "imagenet16-120"])
def test_nb201_skeleton_matches_the_benchmarks_published_params_and_flops(resolution, classes, params, flops):
    space = Space.from_dict(_nb201_dict(input__resolution=resolution, num_classes=classes))
    for arch, p, f in [(ALL_NONE, params[0], flops[0]), (ALL_CONV3, params[1], flops[1])]:
        madds, n_params = space.cost(arch)
        assert n_params == round(p * 1e6)
        # The benchmark's FLOP counter also counts the classifier's bias additions; ours counts MAdds.
        assert madds + classes == round(f * 1e6)


@pytest.mark.parametrize("name,resolution,classes", [("nb201", 32, 10), ("nb201-demo", 32, 10), (None, 16, 120)])
def test_cellnet_maps_images_to_logits(name, resolution, classes):
    space = (Space.load(name) if name else
             Space.from_dict(_nb201_dict(input__resolution=resolution, num_classes=classes)))
    net = CellNet(space, space.draw(random.Random(1)))
    out = net(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_cellnet_module_names_are_stable_and_name_the_edge_and_op(nb201):
    net = CellNet(nb201, "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    names = dict(net.named_modules())
    assert "body.reduce1" in names and "body.reduce2" in names and "body.reduce0" not in names
    assert [n for n in names if n.startswith("body.stage") and n.count(".") == 1] == [
        f"body.stage{s}_cell{i}" for s in range(3) for i in range(5)]
    assert "body.stage2_cell4.edges.3<-1.nor_conv_1x1.conv" in names
    for cell in (m for m in net.modules() if isinstance(m, Cell)):
        assert list(cell.edges.keys()) == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]


def test_none_edges_never_call_a_module(nb201):
    arch = CellArch.from_nb201("|none~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|")
    net = CellNet(nb201, arch)
    zeros = [m for m in net.modules() if isinstance(m, Zero)]
    assert len(zeros) == 3 * len(nb201.cells)
    calls = []
    for m in zeros:
        m.register_forward_hook(lambda *_: calls.append(1))
    net(torch.randn(2, 3, 32, 32))
    assert calls == []


def _cell_by_definition(cell: Cell, arch: CellArch, x: torch.Tensor) -> torch.Tensor:
    """NAS-Bench-201's cell as defined: every node sums every edge's module, the zero op included."""
    nodes = [x]
    for dst in range(1, arch.nodes):
        nodes.append(sum(cell.edges[f"{dst}<-{src}"][arch.op(dst, src)](nodes[src]) for src in range(dst)))
    return nodes[-1]


@pytest.mark.parametrize("seed", range(6))
def test_skipping_none_edges_computes_the_cell_as_defined(seed):
    rng = random.Random(seed)
    arch = CellArch(tuple(rng.choice(OPS) for _ in range(6)))
    torch.manual_seed(seed)
    cell = Cell(arch, 5).eval()
    for m in cell.modules():  # non-trivial BN statistics, so that a zero node's convs give non-zero output
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.weight.data.uniform_(0.5, 2), m.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(cell(x), _cell_by_definition(cell, arch, x), rtol=0, atol=0)


def test_a_node_with_only_none_inputs_is_zero():
    arch = CellArch.from_nb201("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|none~2|")
    out = Cell(arch, 4)(torch.randn(2, 4, 6, 6))
    assert out.shape == (2, 4, 6, 6) and not out.any()


def test_cellnet_refuses_other_spaces_and_foreign_architectures(nb201):
    with pytest.raises(SpaceError, match="takes a cell space"):
        CellNet("demo", ALL_NONE)
    with pytest.raises(SpaceError, match=r"ops\[0\]: 'mb_k3_e3'"):
        CellNet(nb201, "|mb_k3_e3~0|+|none~0|none~1|+|none~0|none~1|none~2|")


# ---------------------------------------------------------------------- the real table

@needs_table
def test_every_table_row_parses_round_trips_and_the_table_covers_the_space(table_rows, every_arch):
    assert len(table_rows) == 15_625
    for row in table_rows:
        assert CellArch.from_nb201(row["ArchitectureString"]).to_nb201() == row["ArchitectureString"]
    assert {CellArch.from_nb201(r["ArchitectureString"]) for r in table_rows} == set(every_arch)


@needs_table
def test_table_lookups_equal_the_file(table, table_rows):
    assert len(table) == len(table_rows)
    assert [a.to_nb201() for a in table] == [r["ArchitectureString"] for r in table_rows]
    columns = {"cifar10": "CIFAR10TestAccuracy200Epochs", "cifar100": "CIFAR100TestAccuracy200Epochs",
               "imagenet16-120": "ImageNetTestAccuracy200Epochs"}
    for row in table_rows:
        for metric, column in columns.items():
            assert table.lookup(row["ArchitectureString"], metric) == float(row[column])
    for metric, column in columns.items():
        best = max(table_rows, key=lambda r: float(r[column]))
        assert table.best(metric) == (CellArch.from_nb201(best["ArchitectureString"]), float(best[column]))


@needs_table
def test_the_best_accuracies_are_the_published_optimum(table):
    # The optimum of NAS-Bench-201's test accuracies as DrNAS reports it: 94.37 / 73.51 / 47.31.
    for metric, optimum in [("cifar10", 94.37), ("cifar100", 73.51), ("imagenet16-120", 47.31)]:
        assert table.best(metric)[1] == pytest.approx(optimum, abs=0.005)


@needs_table
def test_table_evaluator_scores_many_architectures_by_lookup(table, table_rows):
    rows = random.Random(2).sample(table_rows, 100)
    ev = TableEvaluator(table, "cifar100")
    assert ev.score_many([CellArch.from_nb201(r["ArchitectureString"]) for r in rows]) == \
        [float(r["CIFAR100TestAccuracy200Epochs"]) for r in rows]
    assert ev.describe()["metric"] == "cifar100" and ev.describe()["architectures"] == 15_625


# ---------------------------------------------------------------------- the reader on small tables

HEADER = ["CIFAR10TestAccuracy200Epochs", "CIFAR100TestAccuracy200Epochs", "ImageNetTestAccuracy200Epochs",
          "ArchitectureString", "UniqueString"]


def _write_table(path: Path, rows, header=HEADER) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    archs = rng.sample(list(Space.load("nb201").enumerate()), n)
    return [[f"{rng.uniform(10, 95):.4f}", f"{rng.uniform(1, 75):.4f}", f"{rng.uniform(1, 48):.4f}", a.to_nb201(),
             unique_string(a)] for a in archs]


def test_small_table_lookups_best_and_evaluator(tmp_path):
    rows = _rows(8)
    table = NB201Table.load(_write_table(tmp_path / "t.csv", rows))
    assert len(table) == 8 and [a.to_nb201() for a in table] == [r[3] for r in rows]
    assert [table.lookup(r[3], "imagenet16-120") for r in rows] == [float(r[2]) for r in rows]
    best = max(rows, key=lambda r: float(r[0]))
    assert table.best("cifar10") == (CellArch.from_nb201(best[3]), float(best[0]))
    assert CellArch.from_nb201(rows[0][3]) in table
    ev = TableEvaluator(str(tmp_path / "t.csv"), "cifar10")
    assert ev.score_many([CellArch.from_nb201(r[3]) for r in rows], desc="x") == [float(r[0]) for r in rows]
    assert ev.describe()["path"] == str(tmp_path / "t.csv")


def _with(rows, line, column, value):
    """``rows`` with the field ``column`` of file line ``line`` (the header is line 1) set to ``value``."""
    rows = [list(r) for r in rows]
    rows[line - 2][column] = value
    return rows


@pytest.mark.parametrize("make,message", [
    (lambda p: p, r"t.csv does not exist"),
    (lambda p: (p.write_text(""), p)[1], r"t.csv is empty \(no header line\)"),
    (lambda p: _write_table(p, []), "t.csv has a header but no rows"),
    (lambda p: _write_table(p, [r[:4] for r in _rows(3)], HEADER[:4]),
     r"t.csv, line 1: missing column\(s\) UniqueString"),
    (lambda p: _write_table(p, _with(_rows(4), 3, 1, "high")),
     r"t.csv, line 3: column CIFAR100TestAccuracy200Epochs: 'high' is not an accuracy"),
    (lambda p: _write_table(p, _with(_rows(4), 2, 0, "130")), r"t.csv, line 2: column CIFAR10TestAccuracy200Epochs"),
    (lambda p: _write_table(p, _with(_rows(4), 2, 2, "nan")), r"t.csv, line 2: column ImageNetTestAccuracy200Epochs"),
    (lambda p: _write_table(p, _with(_rows(4), 4, 3, "|none~0|+|none~1|none~0|")),
     r"t.csv, line 4: column ArchitectureString: NB201 arch string .* comes from node '1'"),
    (lambda p: _write_table(p, _with(_rows(4), 5, 3, "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")),
     r"t.csv, line 5: column ArchitectureString: unknown cell op 'conv'"),
    (lambda p: _write_table(p, _rows(3) + _rows(1)), r"t.csv, line 5: architecture .* is already on line 2"),
    (lambda p: _write_table(p, _rows(2) + [["1", "2"]]), r"t.csv, line 4: 2 field\(s\), the header has 5"),
])
def test_bad_tables_give_one_error_naming_the_file_and_line(tmp_path, make, message):
    path = make(tmp_path / "t.csv")
    with pytest.raises(BenchmarkError, match=message):
        NB201Table.load(path)


def test_bad_queries_give_one_clear_error(tmp_path):
    rows = _rows(3)
    table = NB201Table.load(_write_table(tmp_path / "t.csv", rows))
    absent = next(a for a in Space.load("nb201").enumerate() if a.to_nb201() not in {r[3] for r in rows})
    with pytest.raises(BenchmarkError, match=r"t.csv: architecture \|.*\| is not in the table \(3 rows\)"):
        table.lookup(absent, "cifar10")
    with pytest.raises(BenchmarkError, match=r"unknown metric 'cifar-10' \(metrics: cifar10, cifar100, "
                                             r"imagenet16-120\)"):
        table.lookup(rows[0][3], "cifar-10")
    with pytest.raises(BenchmarkError, match="node 1 has 2 input"):
        table.lookup("|none~0|none~1|", "cifar10")
    with pytest.raises(BenchmarkError, match="unknown metric"):
        TableEvaluator(table, "top1")
