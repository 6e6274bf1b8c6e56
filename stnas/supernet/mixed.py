"""The differentiable (mixed) supernet of a cell space, for DARTS (Liu et al., ICLR 2019) and DrNAS
(Chen et al., ICLR 2021).

Every edge of a search cell carries every candidate op; node i sums ``w[e, o] * op_o(node j)`` over its
incoming edges e = (i, j) and ops o. One architecture parameter ``beta`` (edges x ops), shared by every
cell as in both papers' NAS-Bench-201 code, gives the weights: ``softmax(beta)`` for DARTS, a sample of
``Dirichlet(elu(beta) + 1)`` for DrNAS (drawn once per forward, reparameterised, so the loss is
differentiable in ``beta``). The skeleton and module names are :class:`~stnas.supernet.cell_blocks.CellNet`'s
(``stem``, ``body.reduce{s}``, ``body.stage{s}_cell{i}``, ``head``); search cells use BatchNorm without
affine parameters and with running statistics, as NAS-Bench-201's and DrNAS's search code; the
reduction blocks and the head are affine.

How a cell is computed (the math is the plain weighted sum; only the schedule differs):

* Each node's incoming (edge, op) paths go through one :func:`stnas.ops.masked_path_sum`; ``none`` and
  pruned ops are masked-off paths, never computed nor read. ``none`` contributes zero anyway, but it
  keeps its share of the softmax / Dirichlet mass, as in both papers.
* Per source node, work that every out-edge repeats is done once: the ReLU before the convs, the
  (parameter-free) average pooling; skip_connect is the input itself. Each conv runs on the shared ReLU
  output with its edge's own Parameter (``edges["2<-1"]["nor_conv_3x3"].conv.weight``) and BN module.
* ``fuse_convs=True`` also concatenates, per source node and kernel size, the conv weights of the
  active out-edges along the output channels (at forward time, so pruned ops drop out) and runs ONE
  conv; each edge's BN normalises its split of the output (per-channel, so its running statistics are
  its own). Off by default: on the CPU it was slower than one conv per edge.

Measured (2026-12-02, 2-core CPU VM shared with other jobs, so CPU time of one thread, median of 2 after a
warm-up; nb201, batch 64, 32 px, forward + backward, ``stnas._C`` built): a plain AutoDL/NASLib-style
supernet (ModuleList per edge, ``sum(w * op(x))``, ``none`` as ``x * 0``) 3.4-4.4 s/step, peak RSS 2.7
GiB; this one 2.5-3.2 s/step (1.3-1.65x against the run beside it), 1.55 GiB; with ``fuse_convs``
2.8-3.1 s/step. Noisy: other jobs shared the cores; rerun on a quiet machine before quoting. The peak falls
because ``none`` and the duplicated ReLU / pooling outputs are no longer kept for the backward.

``simplify=...`` builds :class:`~stnas.supernet.toponas.SimplifiedMixedCell` instead (TopoNAS's merged
edges: one conv of the summed kernels per edge and one BN, the same parameters and derivation).

Partial channels (PC-DARTS, Xu et al., ICLR 2020; DrNAS's progressive search): with ``partial_channels=K``
the ops of an edge see the first C/K channels of their source, the other channels bypass, and the edge's
output is ``channel_shuffle(cat(mixed, bypass), K)``. The shuffle is the same permutation on every edge of
a node, so a node shuffles once: ``shuffle(cat(sum of mixed parts, sum of bypasses))``. :meth:`widen`
lowers K by net2wider, as DrNAS's progressive schedule does (K 4 -> 2 while pruning 5 -> 3 ops).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stnas.ops import masked_path_sum
from stnas.spaces import Space
from stnas.spaces.cell import CellArch, CellSpace
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import get_op
from stnas.supernet.cell_blocks import ReLUConvBN, cell_skeleton, edge_key, make_cell_edges

WEIGHTINGS = ("softmax", "dirichlet")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: channel ``g * (C / groups) + i`` moves to ``i * groups + g``."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def join_partial(mixed: torch.Tensor, bypass: list, dst: int, k: int, part: int) -> torch.Tensor:
    """Node ``dst`` of a cell with partial channels (1/k of them through the ops): its mixed part, then
    every source's bypass channels summed unweighted (DrNAS MixedOp), one channel shuffle per node; the
    node's own bypass is appended to ``bypass`` for the nodes after it. ``k == 1``: the mixed part."""
    if k == 1:
        return mixed
    passed = bypass[0] if dst == 1 else masked_path_sum(bypass)
    node = channel_shuffle(torch.cat([mixed, passed], 1), k)
    bypass.append(node[:, part:])
    return node


@dataclass(frozen=True)
class _Plan:
    """What a cell computes for one mask, decided on the host once per mask (never per forward).

    ``convs[j]``: per source node j, groups ``(kernel, [(edge index, op name), ...])`` of active convs
    run as one convolution; ``shared[j]``: ``(op name, [edge index, ...])`` of parameter-free ops run
    once for all those edges; ``single[j]``: other ops, each called on its own; ``identity[j]``: edges
    whose skip_connect is active; ``relu[j]``: whether any conv reads node j; ``active[d]``: node d's
    masked_path_sum mask, over its paths (source s, op o) at index ``s * num_ops + o``."""

    convs: tuple
    shared: tuple
    single: tuple
    identity: tuple
    relu: tuple
    active: tuple


class MixedCell(nn.Module):
    """One search cell: every op on every edge (``edges["2<-1"][op]``, the names of a standalone
    :class:`~stnas.supernet.cell_blocks.Cell`), summed with weights given by the network."""

    def __init__(self, nodes: int, ops: tuple[str, ...], channels: int, partial_channels: int = 1,
                 fuse_convs: bool = False):
        super().__init__()
        self.fuse_convs = fuse_convs
        if channels % partial_channels:
            raise SpaceError(f"partial_channels={partial_channels} must divide the cell width {channels}")
        self.nodes, self.ops, self.channels, self.k = nodes, tuple(ops), channels, partial_channels
        self.edge_list = [(dst, src) for dst in range(1, nodes) for src in range(dst)]
        # Search cells: BatchNorm without affine parameters, with running statistics (NAS-Bench-201 and
        # DrNAS search code: affine=False, track_running_stats=True).
        self.edges = make_cell_edges(nodes, [self.ops] * len(self.edge_list), channels // partial_channels,
                                     affine=False)
        self._plan: _Plan | None = None

    # ---------------------------------------------------------------- planning

    def plan(self, mask: list[list[bool]]) -> _Plan:
        """The schedule for host mask ``mask`` (edges x ops)."""
        num_ops = len(self.ops)
        convs, shared, single, identity, relu = [], [], [], [], []
        for j in range(self.nodes - 1):
            groups: dict[tuple, list] = {}
            free: dict[str, list] = {}
            alone, ident = [], []
            for e, (dst, src) in enumerate(self.edge_list):
                if src != j:
                    continue
                for o, name in enumerate(self.ops):
                    op = get_op(name)
                    if not mask[e][o] or op.zero:
                        continue
                    module = self.edges[edge_key(dst, src)][name]
                    if op.identity:
                        ident.append(e)
                    elif isinstance(module, ReLUConvBN) and module.conv.stride == (1, 1) and module.conv.groups == 1:
                        groups.setdefault(module.conv.kernel_size, []).append((e, name))
                    elif not any(True for _ in module.parameters()) and not any(True for _ in module.buffers()):
                        free.setdefault(name, []).append(e)  # same module on every out-edge: run it once
                    else:
                        alone.append((e, name))
            if self.fuse_convs:
                convs.append(tuple((kernel, tuple(items)) for kernel, items in groups.items()))
            else:
                convs.append(tuple((kernel, (item,)) for kernel, items in groups.items() for item in items))
            shared.append(tuple((name, tuple(es)) for name, es in free.items()))
            single.append(tuple(alone))
            identity.append(tuple(ident))
            relu.append(bool(groups))
        active = [()]
        for dst in range(1, self.nodes):
            row0 = dst * (dst - 1) // 2
            active.append(tuple(bool(mask[row0 + s][o]) and not get_op(self.ops[o]).zero
                                for s in range(dst) for o in range(num_ops)))
        return _Plan(tuple(convs), tuple(shared), tuple(single), tuple(identity), tuple(relu), tuple(active))

    # ---------------------------------------------------------------- forward

    def _emit(self, j: int, x: torch.Tensor, outs: dict) -> None:
        """Every active op's output on every out-edge of node j, into ``outs[(edge, op index)]``."""
        plan, index = self._plan, self.ops.index
        if plan.relu[j]:
            r = torch.relu(x)
            for kernel, items in plan.convs[j]:
                modules = [self.edges[edge_key(*self.edge_list[e])][name] for e, name in items]
                conv0 = modules[0].conv
                weight = conv0.weight if len(modules) == 1 else torch.cat([m.conv.weight for m in modules])
                y = F.conv2d(r, weight, None, 1, conv0.padding, conv0.dilation)
                # split, not slicing: its backward concatenates the slices' gradients once, where each
                # slice's backward would fill a zero tensor of the whole output.
                parts = (y,) if len(modules) == 1 else y.split(conv0.out_channels, 1)
                for (e, name), m, part in zip(items, modules, parts):
                    # The edge's own BN on its channel slice: per-channel, so the same as running it
                    # alone, running statistics included.
                    outs[(e, index(name))] = m.bn(part)
        for name, es in plan.shared[j]:
            y = self.edges[edge_key(*self.edge_list[es[0]])][name](x)
            for e in es:
                outs[(e, index(name))] = y
        for e, name in plan.single[j]:
            outs[(e, index(name))] = self.edges[edge_key(*self.edge_list[e])][name](x)
        skip = index(next(n for n in self.ops if get_op(n).identity)) if plan.identity[j] else None
        for e in plan.identity[j]:
            outs[(e, skip)] = x

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: (edges, ops), the network's weights for this forward; masked entries are unused."""
        plan, k, num_ops = self._plan, self.k, len(self.ops)
        part = x.shape[1] // k
        states, bypass, outs = [x], [x[:, part:]] if k > 1 else None, {}
        for dst in range(1, self.nodes):
            src = dst - 1
            self._emit(src, states[src][:, :part] if k > 1 else states[src], outs)
            row0 = dst * (dst - 1) // 2
            active = plan.active[dst]
            ys = [outs.get((row0 + s, o)) if active[s * num_ops + o] else None
                  for s in range(dst) for o in range(num_ops)]
            if any(active):
                mixed = masked_path_sum(ys, weights[row0:row0 + dst].reshape(-1), active)
            else:  # every input is none or pruned: a zero node, whose readers still run (as NAS-Bench-201)
                mixed = x.new_zeros((x.shape[0], part, *x.shape[2:]))
            states.append(join_partial(mixed, bypass, dst, k, part))
        return states[-1]


class MixedCellNet(nn.Module):
    """The mixed supernet of a cell space: ``MixedCellNet(space, weighting, partial_channels)``.

    ``weighting``: ``"softmax"`` (DARTS) or ``"dirichlet"`` (DrNAS). Parameters: ``beta`` (edges x ops)
    and the weights (:meth:`weight_parameters`). Buffer ``mask`` (edges x ops, bool): the ops still in
    the search (:meth:`prune`). ``forward(x, weights=None)`` draws the weights once (or takes the given
    ones) and uses them in every cell."""

    def __init__(self, space: CellSpace | str, weighting: str = "softmax", partial_channels: int = 1, *,
                 fuse_convs: bool = False, simplify=None):
        super().__init__()
        space = Space.load(space)
        if not isinstance(space, CellSpace):
            raise SpaceError(f"MixedCellNet takes a cell space, got a {space.kind!r} space ({space.name!r})")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"MixedCellNet: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if isinstance(partial_channels, bool) or not isinstance(partial_channels, int) or partial_channels < 1:
            raise ValueError(f"MixedCellNet: partial_channels must be an integer >= 1, got {partial_channels!r}")
        for width in space.stage_channels:
            if width % partial_channels:
                raise SpaceError(f"MixedCellNet: partial_channels={partial_channels} must divide every stage width "
                                 f"{tuple(space.stage_channels)}")
        self.space, self.weighting, self.partial_channels = space, weighting, partial_channels
        from stnas.supernet.toponas import Simplify, SimplifiedMixedCell

        # simplify (TopoNAS, stnas.supernet.toponas): merged edges; True, a dict of options or a Simplify.
        self.simplify = Simplify.of(simplify)
        if self.simplify is not None:
            def make(site):
                return SimplifiedMixedCell(space.nodes, space.ops, site.channels, partial_channels, self.simplify)
        else:
            def make(site):
                return MixedCell(space.nodes, space.ops, site.channels, partial_channels, fuse_convs)
        self.stem, self.body, self.head = cell_skeleton(space, make)
        num_edges, num_ops = len(space.edges), len(space.ops)
        # One beta for every cell (DARTS and DrNAS on NAS-Bench-201), initialised as their code does.
        self.beta = nn.Parameter(1e-3 * torch.randn(num_edges, num_ops))
        self.register_buffer("mask", torch.ones(num_edges, num_ops, dtype=torch.bool))
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_mask())
        self._sync_mask()

    # ---------------------------------------------------------------- parameters and state

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "beta"]

    def cells(self) -> list[MixedCell]:
        return [m for m in self.body if hasattr(m, "plan")]

    def _sync_mask(self) -> None:
        """Copy the mask to the host and re-plan the cells: forward never reads the device mask (no sync)."""
        mask = self.mask.detach().cpu()
        if not mask.any(1).all():
            raise ValueError("MixedCellNet: every edge must keep at least one op")
        self._mask_host = mask.tolist()
        self._rows = {}  # rows by kept count, for the Dirichlet draw over kept ops
        for e, row in enumerate(self._mask_host):
            self._rows.setdefault(sum(row), []).append(e)
        self._kept = {c: (torch.tensor(rows), torch.tensor([[o for o, m in enumerate(self._mask_host[e]) if m]
                                                            for e in rows]))
                      for c, rows in self._rows.items()}
        for cell in self.cells():
            cell._plan = cell.plan(self._mask_host)

    # ---------------------------------------------------------------- architecture weights

    def _concentration(self) -> torch.Tensor:
        return F.elu(self.beta) + 1  # DrNAS: positive, ~1 at beta = 0

    def sample_weights(self) -> torch.Tensor:
        """The weights of one forward (edges x ops, 0 where masked): ``softmax`` over the kept ops, or a
        reparameterised sample of ``Dirichlet(elu(beta) + 1)`` over the kept ops of every edge.

        DrNAS samples over all ops, then zeroes the pruned ones and renormalises; by the Dirichlet's
        aggregation property that is a Dirichlet over the kept ops, which we draw directly, so a pruned
        entry of ``beta`` gets exactly zero gradient."""
        if self.weighting == "softmax":
            return self.beta.masked_fill(~self.mask, float("-inf")).softmax(-1)
        conc = self._concentration()
        if all(c == conc.shape[1] for c in self._kept):  # nothing pruned
            return torch.distributions.Dirichlet(conc).rsample()
        out = torch.zeros_like(conc)
        for c, (rows, cols) in self._kept.items():
            rows, cols = rows.to(conc.device), cols.to(conc.device)
            sample = torch.distributions.Dirichlet(conc[rows[:, None], cols]).rsample()
            out = out.index_put((rows[:, None].expand_as(cols), cols), sample)
        return out

    def arch_weights(self) -> torch.Tensor:
        """The expected weights without sampling (edges x ops, 0 where masked, rows sum to 1): the softmax
        over kept ops, or the Dirichlet mean ``conc / sum(conc)`` over kept ops."""
        if self.weighting == "softmax":
            return self.beta.masked_fill(~self.mask, float("-inf")).softmax(-1)
        conc = self._concentration().masked_fill(~self.mask, 0.0)
        return conc / conc.sum(-1, keepdim=True)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Logits. ``weights`` (edges x ops): use these (as given, masked entries unused) instead of
        drawing; by default one draw of :meth:`sample_weights` (DrNAS samples in eval mode too, as its
        code does)."""
        w = self.sample_weights() if weights is None else weights
        x = self.stem(x)
        for module in self.body:
            x = module(x, w) if hasattr(module, "plan") else module(x)
        return self.head(x)

    # ---------------------------------------------------------------- derive and prune

    def derive(self) -> CellArch:
        """The argmax of ``beta`` per edge over the kept ops (DrNAS and DARTS on NAS-Bench-201 derive from
        beta, ``none`` included; ties: the lower op index)."""
        best = self.beta.detach().masked_fill(~self.mask, float("-inf")).argmax(-1).tolist()
        return self.space.validate(CellArch(tuple(self.space.ops[o] for o in best)))

    @torch.no_grad()
    def prune(self, keep: int) -> torch.Tensor:
        """Keep the ``keep`` ops of highest :meth:`arch_weights` per edge among those kept (ties: the
        lower op index); the weights renormalise over them. ``beta`` itself is left as it is (DrNAS zeroes
        the pruned entries; with the mask they are unused either way). Returns the new mask."""
        kept_now = min(len(r) for r in (torch.nonzero(row).flatten() for row in self.mask))
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= kept_now:
            raise ValueError(f"MixedCellNet.prune: keep must be an integer in [1, {kept_now}], got {keep!r}")
        scores = self.arch_weights().masked_fill(~self.mask, float("-inf")).cpu()
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :keep]
        mask = torch.zeros_like(self.mask, device="cpu").scatter_(1, order, True)
        self.mask.copy_(mask)
        self._sync_mask()
        return self.mask

    # ---------------------------------------------------------------- partial channels

    @torch.no_grad()
    def widen(self, new_k: int, generator: torch.Generator | None = None) -> None:
        """Partial channels K -> ``new_k`` < K by net2wider (Chen et al., ICLR 2016), as DrNAS's progressive
        search: every conv of every op gets C/new_k input and output channels; the new input columns and
        output filters are copies of randomly chosen old ones, and each BN's running statistics follow
        its filters. As in DrNAS the copied input columns are not rescaled: they read channels that used
        to bypass, not copies of the old inputs, so no rescaling would preserve the function (the shuffle
        with K groups changes too). What is preserved: on the old input channels (new ones zero), every
        op's old output channels are unchanged and its new ones are copies of the chosen old ones.

        Parameters are replaced: build the optimizer anew (DrNAS carries the momentum over by the same
        indices; we leave that to the trainer)."""
        k = self.partial_channels
        if isinstance(new_k, bool) or not isinstance(new_k, int) or not 1 <= new_k < k:
            raise ValueError(f"MixedCellNet.widen: new_k must be an integer in [1, {k}), got {new_k!r}")
        for width in self.space.stage_channels:
            if width % new_k:
                raise SpaceError(f"MixedCellNet.widen: {new_k} must divide every stage width "
                                 f"{tuple(self.space.stage_channels)}")
        device = self.beta.device
        for cell in self.cells():
            new_c = cell.channels // new_k
            for ops in cell.edges.values():
                for module in ops.values():
                    if isinstance(module, ReLUConvBN):
                        _widen_relu_conv_bn(module, new_c, generator, device)
                    elif any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
                        raise NotImplementedError(f"MixedCellNet.widen: no net2wider rule for {type(module).__name__}")
            cell.k = new_k
            if hasattr(cell, "widened"):
                cell.widened()
        self.partial_channels = new_k
        self._sync_mask()


def _widen_relu_conv_bn(module: ReLUConvBN, channels: int, generator, device) -> None:
    conv, bn = module.conv, module.bn
    cin, cout = conv.in_channels, conv.out_channels
    in_idx = torch.randint(0, cin, (channels - cin,), generator=generator).to(device)
    out_idx = torch.randint(0, cout, (channels - cout,), generator=generator).to(device)
    w = conv.weight.detach()
    w = torch.cat([w, w[:, in_idx]], 1)
    conv.weight = nn.Parameter(torch.cat([w, w[out_idx]], 0))
    conv.in_channels = conv.out_channels = channels
    for name in ("running_mean", "running_var"):
        buf = getattr(bn, name)
        if buf is not None:
            setattr(bn, name, torch.cat([buf, buf[out_idx]]))
    if bn.affine:
        bn.weight = nn.Parameter(torch.cat([bn.weight.detach(), bn.weight.detach()[out_idx]]))
        bn.bias = nn.Parameter(torch.cat([bn.bias.detach(), bn.bias.detach()[out_idx]]))
    bn.num_features = channels
    module.widened_index = (in_idx, out_idx)  # for tests and for carrying optimizer state over
