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
        arch = self._resolve(arch)
        feats = [self.stem(x)]
        for k, edges in enumerate(self.edges):
            j = k + 1
            ys = [edges[arch.ops[k]](feats[k])]
            for b, src in self._incoming[j]:
                op = arch.branches[b]
                ys.append(None if op is None else self.branches[b][op](feats[src]))
            feats.append(ys[0] if len(ys) == 1 else masked_path_sum(ys))
        return self.head(feats[-1])

    def active_modules(self, arch: Arch | None = None) -> Iterator[nn.Module]:
        """The modules ``forward(x, arch)`` runs."""
        arch = self._resolve(arch)
        yield self.stem
        for k, edges in enumerate(self.edges):
            yield edges[arch.ops[k]]
        for b, op in enumerate(arch.branches):
            if op is not None:
                yield self.branches[b][op]
        yield self.head

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
