"""The ``resnet`` kind of space (CR-NAS, Liang et al., ICLR 2020, arXiv 1912.11234): a ResNet whose
computation is reallocated, not grown.

Two kinds of decision on a fixed ResNet skeleton (He et al., CVPR 2016; torchvision's layout, the
stride on the 3x3 convolution):

- **stage allocation**: how many blocks each of the four stages gets, from per-stage candidate sets
  (CR-NAS's: T1, T2 in 1..10, T3 in {2,3,5,6,9,11,14,17,20,23}, T4 in {2,3,4,6,7,9,11,13,15,17}),
  with the total number of blocks N fixed (ResNet-50: 16), so the computation stays near constant;
- **spatial allocation**: the dilation (1, 2 or 3) of every block's centre 3x3 convolution (a
  Bottleneck's only 3x3, a BasicBlock's second). Padding follows the dilation, so a dilation changes
  the receptive field and neither the output size, the MAdds nor the parameters.

An architecture (:class:`ResNetArch`) is the allocation and the N dilations, block by block through the
network. Its genes are the four stage counts, then the N dilations. Because a stage's input width and
resolution do not depend on how many blocks any stage has, the cost still adds up per decision (a stage
of n blocks costs its first block plus n - 1 later blocks); only the sum constraint couples the
decisions, and this kind overrides what that touches: validation, counting, ranges, sampling, mutation
and crossover.

The standard ResNets are members: ``skeleton.blocks`` is the reference allocation (ResNet-18 2-2-2-2,
ResNet-34/50 3-4-6-3, ResNet-101 3-4-23-3) and :meth:`ResNetSpace.reference` its architecture with
every dilation 1, whose cost is the published one (ResNet-18 1.82G multiply-adds / 11.69M parameters,
ResNet-50 4.09G / 25.56M at 224 px with the 1000-class head).

A space file::

    type: resnet
    name: resnet50
    input: {resolution: 224, channels: 3}
    num_classes: 1000
    skeleton:
      block: bottleneck            # or basic
      stem: {width: 64, kernel: 7, stride: 2, pool: true}   # conv + BN + ReLU (+ 3x3/2 max pool)
      widths: [64, 128, 256, 512]  # planes per stage (a Bottleneck outputs 4x)
      blocks: [3, 4, 6, 3]         # the reference allocation; its sum is N
    search:                        # optional fields; CR-NAS's sets and dilations by default
      stages: [[1, 2, ...], ...]   # candidate block counts per stage
      dilations: [1, 2, 3]
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from functools import cached_property

from stnas.spaces.base import Cost, Decision, Space, read_header, register_kind
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import conv_cost, conv_out

# CR-NAS's stage sets for the ResNet series (Liang et al. 2020, section 3).
CRNAS_STAGES = (tuple(range(1, 11)), tuple(range(1, 11)), (2, 3, 5, 6, 9, 11, 14, 17, 20, 23),
                (2, 3, 4, 6, 7, 9, 11, 13, 15, 17))
CRNAS_DILATIONS = (1, 2, 3)
BLOCKS = {"basic": 1, "bottleneck": 4}  # block kind -> expansion (output width / planes)


@dataclass(frozen=True)
class ResNetArch:
    """Blocks per stage and the dilation of every block's centre 3x3 conv, in network order."""

    blocks: tuple[int, ...]
    dilations: tuple[int, ...]

    def __post_init__(self):
        for name in ("blocks", "dilations"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise SpaceError(f"arch.{name} must be a tuple of integers, got {v!r}")

    def stage_dilations(self) -> tuple[tuple[int, ...], ...]:
        """The dilations grouped by stage."""
        out, k = [], 0
        for n in self.blocks:
            out.append(self.dilations[k:k + n])
            k += n
        return tuple(out)

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "dilations": list(self.dilations)}

    @classmethod
    def from_dict(cls, data) -> "ResNetArch":
        if not isinstance(data, dict):
            raise SpaceError(f"a resnet architecture is a JSON object with 'blocks' and 'dilations', got "
                             f"{type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], dict):  # an exported file: {"space": ..., "arch": {...}}
            data = data["arch"]
        unknown = set(data) - {"blocks", "dilations"}
        if unknown:
            raise SpaceError(f"resnet architecture: unknown field(s) {sorted(unknown)} (expected 'blocks' and "
                             f"'dilations')")
        for key in ("blocks", "dilations"):
            if not isinstance(data.get(key), list):
                raise SpaceError(f"resnet architecture field {key!r}: expected a list of integers")
        return cls(tuple(data["blocks"]), tuple(data["dilations"]))


@dataclass(frozen=True)
class BlockSite:
    """Where one block of the network sits: stage, index in the stage, its shape."""

    stage: int
    index: int
    cin: int
    planes: int
    cout: int
    stride: int
    in_size: int


@register_kind
@dataclass(frozen=True)
class ResNetSpace(Space):
    kind = "resnet"
    arch_type = ResNetArch

    name: str
    resolution: int
    in_channels: int
    num_classes: int
    block: str
    stem_width: int
    stem_kernel: int
    stem_stride: int
    stem_pool: bool
    widths: tuple[int, ...]
    ref_blocks: tuple[int, ...]
    stage_choices: tuple[tuple[int, ...], ...]
    dilation_choices: tuple[int, ...] = CRNAS_DILATIONS
    source: str = field(default="", compare=False)

    # ---------------------------------------------------------------- loading

    @classmethod
    def _parse(cls, data, source: str = "") -> "ResNetSpace":
        (fail, obj, integer, check_keys), data, inp = read_header(data, source, ("skeleton", "search"))
        sk = obj(data["skeleton"], "skeleton")
        check_keys(sk, "skeleton", {"block", "stem", "widths", "blocks"}, ("block", "stem", "widths", "blocks"))
        if sk["block"] not in BLOCKS:
            fail(f"'skeleton.block' must be one of {sorted(BLOCKS)}, got {sk['block']!r}")
        stem = obj(sk["stem"], "skeleton.stem")
        check_keys(stem, "skeleton.stem", {"width", "kernel", "stride", "pool"}, ("width",))
        kernel = integer(stem.get("kernel", 7), "skeleton.stem.kernel")
        if kernel % 2 == 0:
            fail(f"'skeleton.stem.kernel' must be odd, got {kernel}")
        pool = stem.get("pool", True)
        if not isinstance(pool, bool):
            fail(f"'skeleton.stem.pool' must be true or false, got {pool!r}")

        def int_list(value, path, length=None):
            if not isinstance(value, list) or not value or (length is not None and len(value) != length):
                fail(f"'{path}' must be a list of {length or 'one or more'} integers, got {value!r}")
            return tuple(integer(v, f"{path}[{k}]") for k, v in enumerate(value))

        widths = int_list(sk["widths"], "skeleton.widths")
        ref = int_list(sk["blocks"], "skeleton.blocks", len(widths))
        search = obj(data["search"] or {}, "search")
        check_keys(search, "search", {"stages", "dilations"})
        if "stages" in search:
            if not isinstance(search["stages"], list) or len(search["stages"]) != len(widths):
                fail(f"'search.stages' must list one set of block counts per stage ({len(widths)}), got "
                     f"{search['stages']!r}")
            stages = tuple(tuple(sorted(set(int_list(s, f"search.stages[{k}]")))) for k, s in enumerate(search["stages"]))
        elif len(widths) == 4:
            stages = CRNAS_STAGES
        else:
            fail("'search.stages' is needed when the skeleton does not have 4 stages (CR-NAS's sets are for 4)")
        dilations = tuple(sorted(set(int_list(search.get("dilations", list(CRNAS_DILATIONS)), "search.dilations"))))
        for s, (n, choices) in enumerate(zip(ref, stages)):
            if n not in choices:
                fail(f"'skeleton.blocks[{s}]' = {n} is not among the stage's candidates {list(choices)} (the "
                     f"reference allocation must be a member)")
        space = cls(name=data["name"], resolution=integer(inp["resolution"], "input.resolution"),
                    in_channels=integer(inp.get("channels", 3), "input.channels"),
                    num_classes=integer(data["num_classes"], "num_classes"), block=sk["block"],
                    stem_width=integer(stem["width"], "skeleton.stem.width"), stem_kernel=kernel,
                    stem_stride=integer(stem.get("stride", 2), "skeleton.stem.stride"), stem_pool=pool,
                    widths=widths, ref_blocks=ref, stage_choices=stages, dilation_choices=dilations, source=source)
        return space

    def to_dict(self) -> dict:
        return {"type": self.kind, "name": self.name,
                "input": {"resolution": self.resolution, "channels": self.in_channels},
                "num_classes": self.num_classes,
                "skeleton": {"block": self.block,
                             "stem": {"width": self.stem_width, "kernel": self.stem_kernel,
                                      "stride": self.stem_stride, "pool": self.stem_pool},
                             "widths": list(self.widths), "blocks": list(self.ref_blocks)},
                "search": {"stages": [list(s) for s in self.stage_choices], "dilations": list(self.dilation_choices)}}

    # ---------------------------------------------------------------- structure

    @property
    def total(self) -> int:
        """N: the number of blocks every architecture has."""
        return sum(self.ref_blocks)

    @property
    def expansion(self) -> int:
        return BLOCKS[self.block]

    @cached_property
    def stem_out(self) -> int:
        """Spatial size after the stem (and its pool)."""
        size = conv_out(self.resolution, self.stem_stride)
        return conv_out(size, 2) if self.stem_pool else size

    @cached_property
    def stage_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        """Per stage: (input channels, output channels, stride of its first block, input size)."""
        out, cin, size = [], self.stem_width, self.stem_out
        for s, planes in enumerate(self.widths):
            stride = 1 if s == 0 else 2
            cout = planes * self.expansion
            out.append((cin, cout, stride, size))
            cin, size = cout, conv_out(size, stride)
        return tuple(out)

    def stage_strides(self) -> tuple[int, ...]:
        """The total stride at each stage's output (4, 8, 16, 32 for the standard stem)."""
        total = self.stem_stride * (2 if self.stem_pool else 1)
        out = []
        for _, _, stride, _ in self.stage_shapes:
            total *= stride
            out.append(total)
        return tuple(out)

    def site(self, stage: int, index: int) -> BlockSite:
        cin, cout, stride, size = self.stage_shapes[stage]
        if index > 0:
            cin, size, stride = cout, conv_out(size, stride), 1
        return BlockSite(stage, index, cin, self.widths[stage], cout, stride, size)

    @cached_property
    def allocations(self) -> tuple[tuple[int, ...], ...]:
        """Every admissible allocation (one count per stage from its set, summing to N), sorted."""
        return tuple(a for a in itertools.product(*self.stage_choices) if sum(a) == self.total)

    @cached_property
    def stage_max(self) -> tuple[int, ...]:
        """The most blocks each stage has in any admissible allocation (what the supernet holds)."""
        return tuple(max(a[s] for a in self.allocations) for s in range(len(self.widths)))

    def reference(self) -> ResNetArch:
        """The skeleton's own network (the standard ResNet): its allocation, every dilation 1."""
        return ResNetArch(self.ref_blocks, (1,) * self.total)

    # ---------------------------------------------------------------- the protocol

    @cached_property
    def _decisions(self) -> tuple[Decision, ...]:
        stages = tuple(Decision(f"arch.blocks[{s}]", c, f"stage {s + 1}") for s, c in enumerate(self.stage_choices))
        dil = tuple(Decision(f"arch.dilations[{k}]", self.dilation_choices, f"block {k + 1} of {self.total}")
                    for k in range(self.total))
        return stages + dil

    def decisions(self) -> tuple[Decision, ...]:
        """The block count of every stage, then the dilation of every block (network order)."""
        return self._decisions

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def genes(self, arch: ResNetArch) -> tuple:
        if not isinstance(arch, ResNetArch):
            raise SpaceError(f"expected a ResNetArch, got {type(arch).__name__}")
        if len(arch.blocks) != self.num_stages:
            raise SpaceError(f"arch.blocks has {len(arch.blocks)} entries, space {self.name!r} has "
                             f"{self.num_stages} stages")
        if len(arch.dilations) != self.total:
            raise SpaceError(f"arch.dilations has {len(arch.dilations)} entries, space {self.name!r} has "
                             f"{self.total} blocks (N)")
        return arch.blocks + arch.dilations

    def from_genes(self, genes) -> ResNetArch:
        genes = tuple(genes)
        return ResNetArch(genes[:self.num_stages], genes[self.num_stages:])

    def validate(self, arch):
        super().validate(arch)
        if sum(arch.blocks) != self.total:
            raise SpaceError(f"arch.blocks {list(arch.blocks)} sums to {sum(arch.blocks)}; space {self.name!r} "
                             f"keeps the total at N = {self.total}")
        return arch

    def _block_cost(self, site: BlockSite) -> Cost:
        out = conv_out(site.in_size, site.stride)
        parts = []
        if self.block == "basic":
            parts += [conv_cost(site.cin, site.planes, 3, out * out), conv_cost(site.planes, site.cout, 3, out * out)]
        else:
            parts += [conv_cost(site.cin, site.planes, 1, site.in_size * site.in_size),
                      conv_cost(site.planes, site.planes, 3, out * out), conv_cost(site.planes, site.cout, 1, out * out)]
        if site.stride != 1 or site.cin != site.cout:
            parts.append(conv_cost(site.cin, site.cout, 1, out * out))
        return Cost(sum(p[0] for p in parts), sum(p[1] for p in parts))

    @cached_property
    def _stage_costs(self) -> tuple[tuple[Cost, Cost], ...]:
        """Per stage: the cost of its first block and of every later one."""
        return tuple((self._block_cost(self.site(s, 0)), self._block_cost(self.site(s, 1)))
                     for s in range(self.num_stages))

    @cached_property
    def _fixed(self) -> Cost:
        size = conv_out(self.resolution, self.stem_stride)
        m1, p1 = conv_cost(self.in_channels, self.stem_width, self.stem_kernel, size * size)
        m2, p2 = conv_cost(self.widths[-1] * self.expansion, self.num_classes, 1, 1, bn=False, bias=True)
        return Cost(m1 + m2, p1 + p2)

    def fixed_cost(self) -> Cost:
        """Stem convolution and classifier."""
        return self._fixed

    def choice_cost(self, decision: int, value) -> Cost:
        if decision >= self.num_stages:
            return Cost(0, 0)  # a dilation changes no MAdds and no parameters
        (m0, p0), (m1, p1) = self._stage_costs[decision]
        return Cost(m0 + (value - 1) * m1, p0 + (value - 1) * p1)

    # ---------------------------------------------------------------- the sum constraint

    def _range(self, index: int) -> tuple[int, int]:
        fixed = self.fixed_cost()[index]
        costs = [sum(self.choice_cost(s, n)[index] for s, n in enumerate(a)) for a in self.allocations]
        return fixed + min(costs), fixed + max(costs)

    def count_architectures(self) -> int:
        return len(self.allocations) * len(self.dilation_choices) ** self.total

    def count_allocations(self) -> int:
        return len(self.allocations)

    def draw(self, rng: random.Random) -> ResNetArch:
        """Uniform over the admissible allocations, then a uniform dilation per block."""
        return ResNetArch(rng.choice(self.allocations),
                          tuple(rng.choice(self.dilation_choices) for _ in range(self.total)))

    def neighbours(self, blocks: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The admissible allocations that move blocks between exactly two stages."""
        return [a for a in self.allocations if sum(x != y for x, y in zip(a, blocks)) == 2]

    def mutate(self, arch: ResNetArch, rng: random.Random, prob: float = 0.1) -> ResNetArch:
        """With probability ``prob`` (or when nothing else changes) the allocation moves to a neighbour
        (blocks shift between two stages, the sum kept); each dilation is redrawn with probability
        ``prob``. At least one gene changes."""
        self.validate(arch)
        blocks, dil = arch.blocks, list(arch.dilations)
        changed = False
        near = self.neighbours(blocks)
        if near and rng.random() < prob:
            blocks, changed = rng.choice(near), True
        choices = self.dilation_choices
        if len(choices) > 1:
            for k in range(self.total):
                if rng.random() < prob:
                    dil[k] = rng.choice([d for d in choices if d != dil[k]])
                    changed = True
        if not changed:
            if near and (len(choices) < 2 or rng.random() < 0.5):
                blocks = rng.choice(near)
            elif len(choices) > 1:
                k = rng.randrange(self.total)
                dil[k] = rng.choice([d for d in choices if d != dil[k]])
        return ResNetArch(tuple(blocks), tuple(dil))

    def crossover(self, a: ResNetArch, b: ResNetArch, rng: random.Random) -> ResNetArch:
        """The allocation of either parent, every dilation from either parent (by block position)."""
        self.validate(a), self.validate(b)
        blocks = a.blocks if rng.random() < 0.5 else b.blocks
        return ResNetArch(blocks, tuple(x if rng.random() < 0.5 else y for x, y in zip(a.dilations, b.dilations)))

    def largest(self) -> ResNetArch:
        best = max(self.allocations, key=lambda a: sum(self.choice_cost(s, n)[0] for s, n in enumerate(a)))
        return ResNetArch(best, (min(self.dilation_choices),) * self.total)

    def smallest(self) -> ResNetArch:
        best = min(self.allocations, key=lambda a: sum(self.choice_cost(s, n)[0] for s, n in enumerate(a)))
        return ResNetArch(best, (min(self.dilation_choices),) * self.total)

    def info(self) -> dict:
        return {**super().info(), "block": self.block, "total_blocks": self.total,
                "allocations": self.count_allocations(), "reference": list(self.ref_blocks),
                "stage_max": list(self.stage_max)}
