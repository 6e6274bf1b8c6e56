"""The single-path supernet of a chain space (``forward(x, arch)``), and the standalone model of one
architecture.

Both are :class:`ChainNet`: the supernet holds every candidate op of every edge, a standalone model
only its architecture's. Modules have the same names in both (``edges.<k>.<op>``,
``branches.<b>.<op>``), so a standalone model inherits the supernet's weights by a plain subset of its
state dict (:meth:`ChainNet.inherit`).

``forward(x, arch)`` runs only the active ops: an inactive module is not called, so it gets no
gradient and costs no time. A node sums its incoming edges with :func:`stnas.ops.masked_path_sum`; a
branch edge that is off is a masked-off (None) path, never read.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from stnas.ops import masked_path_sum
from stnas.spaces import Arch, ChainSpace, Space
from stnas.supernet.blocks import ConvBN, Head, init_weights
from stnas.supernet.ops import make_op
from stnas.supernet.stages import Stage, run_stages, stage_modules


def _node_stage(op: nn.Module, branches: tuple):
    """The stage of node k + 1: its stem edge ``op`` on node k, plus the ``(module or None, source)``
    branch edges into it, summed by masked_path_sum."""
    def run(feats):
        if not branches:
            return (*feats, op(feats[-1]))
        ys = [op(feats[-1])] + [None if m is None else m(feats[src]) for m, src in branches]
        return (*feats, masked_path_sum(ys))
    return run


class ChainNet(nn.Module):
    def __init__(self, space: ChainSpace | str, arch: Arch | None = None):
        super().__init__()
        self.space = space = Space.load(space)
        if not isinstance(space, ChainSpace):
            raise ValueError(f"ChainNet: space {space.name!r} is a {space.kind!r} space, not a chain")
        self.arch = None if arch is None else space.validate(arch)
        self.stem = ConvBN(space.in_channels, space.stem_width, space.stem_kernel, space.stem_stride)

        def ops_of(edge, chosen):
            names = edge.ops if arch is None else ((chosen,) if chosen is not None else ())
            return nn.ModuleDict({op: make_op(op, edge.cin, edge.cout, edge.stride) for op in names})

        self.edges = nn.ModuleList(ops_of(e, None if arch is None else arch.ops[k])
                                   for k, e in enumerate(space.stem_edges))
        self.branches = nn.ModuleList(ops_of(e, None if arch is None else arch.branches[b])
                                      for b, e in enumerate(space.branch_edges))
        self.head = Head(space.nodes[-1][0], space.head_width, space.num_classes, space.dropout)
        # Incoming branch edges of every node, in the order of space.branch_edges.
        self._incoming = [[] for _ in space.nodes]
        for b, e in enumerate(space.branch_edges):
            self._incoming[e.dst].append((b, e.src))
        self._checked: set[Arch] = set()
        init_weights(self)

    @property
    def is_supernet(self) -> bool:
        return self.arch is None

    def _resolve(self, arch: Arch | None) -> Arch:
        if arch is None:
            if self.arch is None:
                raise ValueError("ChainNet.forward: a supernet needs an architecture: forward(x, arch)")
            return self.arch
        if arch not in self._checked:
            self.space.validate(arch)
            if self.arch is not None and arch != self.arch:
                raise ValueError("ChainNet.forward: this standalone model only runs its own architecture")
            if len(self._checked) > 4096:
                self._checked.clear()
            self._checked.add(arch)
        return arch

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        return run_stages(self.stages(arch), x)

    def stages(self, arch: Arch | None = None) -> list[Stage]:
        """``forward(x, arch)`` as stages (:mod:`stnas.supernet.stages`): the stem, one per node (its stem
        edge and the branch edges into it, keyed by their ops), the head. The state is the tuple of the
        nodes computed so far (a branch reads an earlier node); the head's is the logits."""
        arch = self._resolve(arch)
        stem, head = self.stem, self.head
        out = [Stage((), (stem,), lambda state: (stem(state[0]),))]
        for k, edges in enumerate(self.edges):
            op = edges[arch.ops[k]]
            # An off branch is a masked-off (None) path of the node's sum: never read.
            branches = tuple((None if arch.branches[b] is None else self.branches[b][arch.branches[b]], src)
                             for b, src in self._incoming[k + 1])
            key = (arch.ops[k], *(arch.branches[b] for b, _ in self._incoming[k + 1]))
            out.append(Stage(key, (op, *(m for m, _ in branches if m is not None)), _node_stage(op, branches)))
        out.append(Stage((), (head,), lambda feats: (head(feats[-1]),)))
        return out

    def active_modules(self, arch: Arch | None = None) -> Iterator[nn.Module]:
        """The modules ``forward(x, arch)`` runs."""
        return stage_modules(self.stages(arch))

    def inherit(self, supernet: "ChainNet") -> "ChainNet":
        """Copy the supernet's weights (and BN statistics) into this standalone model."""
        if supernet.space != self.space:
            raise ValueError(f"inherit: the supernet is of space {supernet.space.name!r}, this model of "
                             f"{self.space.name!r}")
        source = supernet.state_dict()
        own = self.state_dict()
        missing = [k for k in own if k not in source]
        if missing:
            raise ValueError(f"inherit: the supernet lacks {len(missing)} of this model's tensors, e.g. {missing[0]}")
        self.load_state_dict({k: source[k] for k in own})
        return self
