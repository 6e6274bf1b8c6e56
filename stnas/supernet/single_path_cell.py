"""The single-path supernet of a cell space (NAS-Bench-201): ``forward(x, arch)`` runs one cell
architecture per call, for SPOS-style uniform sampling and ST-NAS's SGLD proxy on cell spaces.

:class:`CellPathNet` holds every candidate op of every edge of every cell on NAS-Bench-201's skeleton
(:func:`~stnas.supernet.cell_blocks.cell_skeleton`), with the module names of the standalone
:class:`~stnas.supernet.cell_blocks.CellNet` (``stem``, ``body.reduce{s}``, ``body.stage{s}_cell{i}.edges
["2<-1"]["nor_conv_3x3"]``, ``head``), so that the standalone model of an architecture takes the supernet's
weights as a plain subset of its state dict (:func:`inherit`).

``forward(x, arch)`` computes what ``CellNet(space, arch)`` computes: node i sums ``op(node j)`` over
its non-zero incoming edges (with :func:`stnas.ops.masked_path_sum` where there are several), zero
ops are skipped, a node without input is a zero tensor whose readers still run (as NAS-Bench-201's
network does). Every other module is never called, so it gets no gradient (its ``.grad`` stays None,
which the SGLD step skips) and costs nothing.

BatchNorm in the search cells is affine, as in the standalone model, unlike the mixed supernet of
DARTS/DrNAS (:mod:`stnas.supernet.mixed`, non-affine as NAS-Bench-201's search code). Why: there a
node sums every op weighted by the architecture parameters, and a learnable BN scale would compete
with those weights (DARTS turns it off for that reason); a single path has no architecture weights to
compete with. What the proxy ranks is the standalone network with its affine BN (the model the
table's accuracies belong to and that ``stnas retrain`` trains): with affine search cells an
inherited model is exactly the supernet's path (the tests check the forward), and the BN scale and
shift trained in the supernet are part of what is scored. Running statistics are kept, and the proxy
recalibrates them per architecture (:func:`stnas.supernet.recalibrate_bn` over :meth:`active_modules`).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from stnas.ops import masked_path_sum
from stnas.spaces import Space
from stnas.spaces.cell import CellArch, CellSpace
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import get_op
from stnas.supernet.cell_blocks import cell_skeleton, edge_key, make_cell_edges
from stnas.supernet.stages import Stage, run_stages, stage_modules

__all__ = ["CellPathNet", "PathCell", "inherit"]


class PathCell(nn.Module):
    """A search cell of a single-path supernet: every op of every edge (``edges["2<-1"][op]``, affine
    BN); ``forward(x, arch)`` runs the ops ``arch`` names, and no other."""

    def __init__(self, space: CellSpace, channels: int):
        super().__init__()
        self.nodes = space.nodes
        self.edges = make_cell_edges(space.nodes, [space.ops] * len(space.edges), channels, affine=True)

    def forward(self, x: torch.Tensor, plan) -> torch.Tensor:
        states = [x]
        for inputs in plan:
            ys = [self.edges[key][op](states[src]) for key, op, src in inputs]
            if not ys:
                states.append(torch.zeros_like(x))
            else:
                states.append(ys[0] if len(ys) == 1 else masked_path_sum(ys))
        return states[-1]

    def active(self, plan) -> Iterator[nn.Module]:
        for inputs in plan:
            for key, op, _ in inputs:
                yield self.edges[key][op]


class CellPathNet(nn.Module):
    """Single-path supernet of a cell ``space`` (a CellSpace, a space file or a built-in name)."""

    def __init__(self, space: CellSpace | str):
        super().__init__()
        self.space = space = Space.load(space)
        if not isinstance(space, CellSpace):
            raise SpaceError(f"CellPathNet takes a cell space, got a {space.kind!r} space ({space.name!r})")
        self.stem, self.body, self.head = cell_skeleton(space, lambda site: PathCell(space, site.channels))
        self._blocks = [(m, isinstance(m, PathCell)) for m in self.body.children()]
        self._plans: dict[CellArch, tuple] = {}

    @property
    def is_supernet(self) -> bool:
        return True

    def plan(self, arch: CellArch) -> tuple:
        """Per node 1..n-1, the ``(edge key, op, source node)`` of its non-zero inputs (validated once per
        architecture, then cached)."""
        plan = self._plans.get(arch)
        if plan is None:
            if not isinstance(arch, CellArch):
                raise ValueError(f"CellPathNet: forward(x, arch) takes a CellArch, got {type(arch).__name__}")
            self.space.validate(arch)
            plan = tuple(tuple((edge_key(dst, src), arch.op(dst, src), src) for src in range(dst)
                               if not get_op(arch.op(dst, src)).zero) for dst in range(1, arch.nodes))
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[arch] = plan
        return plan

    def forward(self, x: torch.Tensor, arch: CellArch | None = None) -> torch.Tensor:
        if arch is None:
            raise ValueError("CellPathNet.forward: a supernet needs an architecture: forward(x, arch)")
        return run_stages(self.stages(arch), x)

    def stages(self, arch: CellArch) -> list[Stage]:
        """``forward(x, arch)`` as stages (:mod:`stnas.supernet.stages`): the stem, every block of the body
        (a search cell keyed by the cell's plan, a fixed reduction block by ``()``), the head. Every cell
        is the same architecture, so architectures share the stem alone."""
        plan = self.plan(arch)
        out = [_module_stage(self.stem, ())]
        for block, is_cell in self._blocks:
            if is_cell:
                out.append(Stage(plan, tuple(block.active(plan)), lambda state, b=block: (b(state[0], plan),)))
            else:
                out.append(_module_stage(block, ()))
        out.append(_module_stage(self.head, ()))
        return out

    def active_modules(self, arch: CellArch) -> Iterator[nn.Module]:
        """The modules ``forward(x, arch)`` runs (for BN recalibration)."""
        return stage_modules(self.stages(arch))


def _module_stage(module: nn.Module, key) -> Stage:
    return Stage(key, (module,), lambda state: (module(state[0]),))


def inherit(model: nn.Module, supernet: nn.Module) -> nn.Module:
    """Copy a supernet's weights and BN statistics into a standalone ``model`` of the same space (a
    :class:`~stnas.supernet.cell_blocks.CellNet` from a :class:`CellPathNet`): the model's state dict is
    a subset of the supernet's, by name. Returns ``model``."""
    if getattr(supernet, "space", None) != getattr(model, "space", None):
        raise ValueError(f"inherit: the supernet is of space {getattr(supernet.space, 'name', '?')!r}, the model of "
                         f"{getattr(model.space, 'name', '?')!r}")
    source, own = supernet.state_dict(), model.state_dict()
    missing = [k for k in own if k not in source]
    if missing:
        raise ValueError(f"inherit: the supernet lacks {len(missing)} of the model's tensors, e.g. {missing[0]}")
    mismatched = [k for k in own if source[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(f"inherit: tensor {mismatched[0]} has shape {tuple(source[mismatched[0]].shape)} in the "
                         f"supernet, {tuple(own[mismatched[0]].shape)} in the model")
    model.load_state_dict({k: source[k] for k in own})
    return model
