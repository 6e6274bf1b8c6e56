"""GOLD-NAS's gated supernets (Bi, Xie, Chen, Wei, Tian, "GOLD-NAS: Gradual, One-Level, Differentiable",
arXiv 2007.03331): one sigmoid gate per op per edge, on the op's output; weak ops are pruned for good.

Two networks, one interface (``arch_parameters()``, ``weight_parameters()``, ``gates()``,
``prune(threshold, max_count)``, ``derive()``, ``expected_cost()``, ``cost_scale``):

- :class:`GatedCellNet`, on the ``darts-gold`` space: every cell its own gates (``alpha``, cells x 14 x
  ops), any subset of ops per edge, as the paper's relaxed space;
- :class:`GatedNB201Net`, on NAS-Bench-201's ``cell`` space: the mixed supernet of DARTS/DrNAS
  (:class:`~stnas.supernet.mixed.MixedCellNet`, reused as it is) with sigmoid gates in place of the
  softmax/Dirichlet weights. One gate per (edge, op) shared by every cell (our choice: the benchmark's
  table knows only networks whose cells are alike); ``none`` is never gated (it is a zero path) and an
  edge whose gated ops are all pruned is ``none``. :meth:`GatedNB201Net.derive` reduces each edge's
  surviving subset to its strongest op (the highest gate), which is the cell looked up in the table.

A node sums its (edge, op) paths through :func:`stnas.ops.masked_path_sum` with weights = the gates and
mask = not yet pruned: a pruned op is never called (its inputs are not even read) and gets no
gradient, so the step gets cheaper as pruning proceeds. The pruned op's module stays in the network
(no parameter changes, no optimiser reset needed; its parameters just get no gradient and SGD skips
them), which keeps the checkpoint's shape fixed for exact resume.

The resource term is ``expected_cost() = sum over unpruned (cell, edge, op) of gate * cost(op)``, MAdds
and parameters, from the space's torch-free cost table (:meth:`stnas.spaces.Space.choice_cost`), so it
costs nothing to compute and matches ``space.cost(derive())`` minus the fixed part when every gate is 1.
"""
from __future__ import annotations

import torch
from torch import nn

from stnas.ops import masked_path_sum
from stnas.spaces import Space
from stnas.spaces.cell import CellArch, CellSpace
from stnas.spaces.darts_cell import EDGES, INPUT_NODES, STEPS, DartsGoldSpace, GoldArch, GoldCell
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import get_op
from stnas.supernet.cell_blocks import edge_key
from stnas.supernet.darts_blocks import GoldCellBase, gold_skeleton
from stnas.supernet.mixed import MixedCellNet


def _check_threshold(threshold, max_count) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"prune: threshold must be a gate value in (0, 1), got {threshold!r}")
    if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1):
        raise ValueError(f"prune: max_count must be an integer >= 1 or None, got {max_count!r}")


class _Gated:
    """What both gated networks share: gates from ``alpha``, the cost term, threshold pruning. A subclass
    has ``alpha`` (logits), ``mask`` (bool buffer, same shape), ``gateable`` (bool, same shape: the
    entries that are real ops), ``_op_madds`` / ``_op_params`` (buffers, the cost of each entry when
    kept) and ``_sync_mask()``."""

    def gates(self) -> torch.Tensor:
        """sigmoid(alpha), zero where pruned (and where there is no gated op)."""
        return torch.sigmoid(self.alpha) * (self.mask & self.gateable)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def expected_cost(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(MAdds, parameters) in expectation over the gates: sum(gate * cost(op)) over the unpruned ops,
        differentiable in ``alpha``; the fixed part of the space is not included."""
        g = self.gates()
        return (g * self._op_madds).sum(), (g * self._op_params).sum()

    @property
    def cost_scale(self) -> tuple[float, float]:
        """The (MAdds, params) of every gated op together: the resource term is divided by these so that its
        weight lambda is unitless."""
        return float(self._op_madds.sum()), float(self._op_params.sum())

    def kept_count(self) -> int:
        return int((self.mask & self.gateable).sum())

    def pruned_count(self) -> int:
        return int((~self.mask & self.gateable).sum())

    @torch.no_grad()
    def below(self, threshold: float) -> int:
        """How many unpruned ops have a gate below ``threshold``."""
        return int(((torch.sigmoid(self.alpha) < threshold) & self.mask & self.gateable).sum())

    @torch.no_grad()
    def prune(self, threshold: float, max_count: int | None = None) -> list[tuple[int, ...]]:
        """Prune for good every unpruned op whose gate is below ``threshold`` (at most ``max_count`` of them,
        the weakest first; ties: the lower index). Returns the indices pruned (into ``alpha``)."""
        _check_threshold(threshold, max_count)
        g = torch.sigmoid(self.alpha.detach()).cpu()
        candidates = (g < threshold) & self.mask.cpu() & self.gateable.cpu()
        flat = torch.nonzero(candidates.flatten()).flatten()
        if not len(flat):
            return []
        order = flat[torch.sort(g.flatten()[flat], stable=True).indices]
        chosen = order[:max_count] if max_count is not None else order
        mask = self.mask.cpu().flatten().clone()
        mask[chosen] = False
        self.mask.copy_(mask.view_as(self.mask))
        self._sync_mask()
        return [tuple(int(i) for i in torch.unravel_index(k, self.mask.shape)) for k in chosen]

    @torch.no_grad()
    def prune_mask(self, keep: torch.Tensor) -> None:
        """Prune every op where ``keep`` (same shape as ``mask``) is False (a benchmark prunes by hand)."""
        if keep.shape != self.mask.shape:
            raise ValueError(f"prune_mask: keep has shape {tuple(keep.shape)}, the mask {tuple(self.mask.shape)}")
        self.mask.copy_(self.mask & (keep.to(self.mask.device).bool() | ~self.gateable))
        self._sync_mask()


# ---------------------------------------------------------------------- darts-gold

class GatedCell(GoldCellBase):
    """A search cell of the darts-gold space: every candidate op on every edge (BN without affine
    parameters, as DARTS's search cells); node i sums ``gate[e, o] * op_o(node j)`` over its unpruned
    paths through one masked_path_sum."""

    def __init__(self, site: GoldCell, ops: tuple[str, ...], share_relu: bool = False):
        super().__init__(site, [ops] * len(EDGES), affine=False)
        self.ops = ops
        self.share_relu = share_relu  # TopoNAS's module sharing: one ReLU per source node
        self._active: tuple = ()

    def plan(self, mask: list[list[bool]]) -> None:
        """Per intermediate node, the rows of its edges and the mask over its (edge, op) paths (host data,
        decided once per mask, so forward never reads the device)."""
        plans = []
        for dst in range(INPUT_NODES, INPUT_NODES + STEPS):
            rows = [e for e, (d, _) in enumerate(EDGES) if d == dst]
            plans.append((rows[0], len(rows), tuple(bool(mask[e][o]) for e in rows for o in range(len(self.ops)))))
        self._active = tuple(plans)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``gates``: (14, ops), this cell's gates."""
        if self.share_relu:
            from stnas.supernet.toponas import shared_relu_cell_forward

            return shared_relu_cell_forward(self, s0, s1, gates)
        states = [self.pre0(s0), self.pre1(s1)]
        n = len(self.ops)
        for dst, (row0, count, active) in zip(range(INPUT_NODES, INPUT_NODES + STEPS), self._active):
            ys = []
            for k, on in enumerate(active):
                e, o = row0 + k // n, k % n
                src = EDGES[e][1]
                ys.append(self.edges[edge_key(dst, src)][self.ops[o]](states[src]) if on else None)
            if any(active):
                states.append(masked_path_sum(ys, gates[row0:row0 + count].reshape(-1), active))
            else:
                states.append(self.zero_node(states[1]))
        return torch.cat(states[INPUT_NODES:], 1)


class GatedCellNet(_Gated, nn.Module):
    """GOLD-NAS's supernet of a darts-gold space: ``alpha`` (cells x 14 x ops) gate logits, initialised to
    ``gate_init`` (a logit: 0 gives gates of 0.5); buffer ``mask`` (same shape, bool): the ops still in."""

    def __init__(self, space: DartsGoldSpace | str, gate_init: float = 0.0, simplify=None):
        super().__init__()
        space = Space.load(space)
        if not isinstance(space, DartsGoldSpace):
            raise SpaceError(f"GatedCellNet takes a darts-gold space, got a {space.kind!r} space ({space.name!r})")
        self.space = space
        # simplify (TopoNAS): on darts-gold only module sharing applies (no candidate is linear in relu(x)
        # beside another: skip reads x, the separable conv is non-linear inside).
        from stnas.supernet.toponas import Simplify

        share = Simplify.of(simplify) is not None
        self.stem, self.cells, self.classifier = gold_skeleton(space, lambda site: GatedCell(site, space.ops, share))
        shape = (space.num_cells, len(EDGES), len(space.ops))
        self.alpha = nn.Parameter(torch.full(shape, float(gate_init)))
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("gateable", torch.ones(shape, dtype=torch.bool), persistent=False)
        costs = [[[space.op_cost(c, e, op) for op in space.ops] for e in range(len(EDGES))]
                 for c in range(space.num_cells)]
        self.register_buffer("_op_madds", torch.tensor([[[m for m, _ in e] for e in c] for c in costs],
                                                       dtype=torch.float64).float(), persistent=False)
        self.register_buffer("_op_params", torch.tensor([[[p for _, p in e] for e in c] for c in costs],
                                                        dtype=torch.float64).float(), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_mask())
        self._sync_mask()

    def _sync_mask(self) -> None:
        host = self.mask.detach().cpu().tolist()
        for c, cell in enumerate(self.cells):
            cell.plan(host[c])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.alpha)  # masked entries are never read by masked_path_sum
        s0 = s1 = self.stem(x)
        for c, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, g[c])
        return self.classifier(s1.mean((2, 3)))

    def derive(self) -> GoldArch:
        """The current architecture: every op not yet pruned."""
        mask = self.mask.detach().cpu().tolist()
        return self.space.validate(GoldArch(tuple(
            tuple(tuple(op for o, op in enumerate(self.space.ops) if mask[c][e][o]) for e in range(len(EDGES)))
            for c in range(self.space.num_cells))))


# ---------------------------------------------------------------------- NAS-Bench-201

class GatedNB201Net(_Gated, MixedCellNet):
    """GOLD-NAS on NAS-Bench-201's cell space: :class:`MixedCellNet` whose edge weights are the sigmoid
    gates ``sigmoid(alpha)`` (edges x ops, shared by every cell); ``none`` stays unpruned and ungated (a
    zero path, never computed), so every edge keeps at least one entry in the mask."""

    def __init__(self, space: CellSpace | str, gate_init: float = 0.0, simplify=None):
        super().__init__(space, weighting="softmax", simplify=simplify)
        space = self.space
        del self.beta  # the gates take the architecture parameters' place
        shape = (len(space.edges), len(space.ops))
        self.alpha = nn.Parameter(torch.full(shape, float(gate_init)))
        gateable = torch.tensor([[not get_op(op).zero for op in space.ops]] * len(space.edges))
        self.register_buffer("gateable", gateable, persistent=False)
        self.register_buffer("_op_madds", torch.tensor([[float(space.choice_cost(e, op)[0]) for op in space.ops]
                                                        for e in range(len(space.edges))]), persistent=False)
        self.register_buffer("_op_params", torch.tensor([[float(space.choice_cost(e, op)[1]) for op in space.ops]
                                                         for e in range(len(space.edges))]), persistent=False)

    @property
    def beta(self) -> torch.Tensor:
        """MixedCellNet's architecture parameter is the gate logit here (read by its derive/prune code)."""
        return self.alpha

    def sample_weights(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha)

    def arch_weights(self) -> torch.Tensor:
        return self.gates()

    def derive(self) -> CellArch:
        """Each edge's surviving subset reduced to its strongest op (highest gate; ties: the lower op
        index); ``none`` where every gated op of the edge is pruned."""
        g = self.gates().detach().cpu()
        none = [o for o, op in enumerate(self.space.ops) if get_op(op).zero]
        ops = []
        for e in range(g.shape[0]):
            row = g[e].tolist()
            kept = [o for o in range(len(row)) if self._mask_host[e][o] and bool(self.gateable[e, o])]
            if not kept:
                if not none:
                    raise SpaceError(f"GatedNB201Net.derive: edge {e} has no op left and the space has no 'none'")
                ops.append(self.space.ops[none[0]])
            else:
                ops.append(self.space.ops[max(kept, key=lambda o: (row[o], -o))])
        return self.space.validate(CellArch(tuple(ops)))

    def subset(self) -> list[list[str]]:
        """The ops every edge still keeps (its gated, unpruned ops)."""
        return [[op for o, op in enumerate(self.space.ops) if self._mask_host[e][o] and bool(self.gateable[e, o])]
                for e in range(len(self.space.edges))]

    def subset_cost(self) -> tuple[int, int]:
        """(MAdds, params) of the network that sums every kept op of every edge (what the supernet computes)."""
        fixed = self.space.fixed_cost()
        keep = (self.mask & self.gateable).cpu()
        return (fixed.madds + int(round(float((keep * self._op_madds.cpu()).sum()))),
                fixed.params + int(round(float((keep * self._op_params.cpu()).sum()))))


def gated_net(space, gate_init: float = 0.0, simplify=None) -> nn.Module:
    """The gated supernet of ``space``: :class:`GatedCellNet` for darts-gold, :class:`GatedNB201Net` for a
    cell space; ``simplify``: TopoNAS's simplification (:mod:`stnas.supernet.toponas`)."""
    space = Space.load(space)
    if isinstance(space, DartsGoldSpace):
        return GatedCellNet(space, gate_init, simplify)
    if isinstance(space, CellSpace):
        return GatedNB201Net(space, gate_init, simplify)
    raise SpaceError(f"GOLD-NAS searches darts-gold and cell (NAS-Bench-201) spaces; {space.name!r} is a "
                     f"{space.kind!r} space")
