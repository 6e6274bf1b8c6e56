"""TopoNAS-style simplification of mixed ops (after "Efficient NAS through topological simplification of
searchable paths", arXiv 2408.01311): the same search, with cheaper mixed edges.

Only the paper's abstract is public to us; it names three parts (modelling the non-linearity that keeps
paths from being reparameterised naively, iterative module sharing, kernel normalisation). What follows
is our design for each; ``docs/toponas.md`` says which part is the paper's and which is ours, with
measured figures.

1. **Which paths can merge (the non-linearity).** An edge of NAS-Bench-201 carries
   ``w_skip * x + w_pool * avgpool(x) + w_1 * BN(conv1x1(relu(x))) + w_3 * BN(conv3x3(relu(x)))``.
   The ReLU splits the candidates into two groups by the input they are linear in: ``x`` (skip, pooling)
   and ``relu(x)`` (the convs); per-op BatchNorm in training mode (batch statistics) makes each conv path
   non-linear again. A group merges into one convolution only where it is linear: skip and pooling
   always; the convs when their BN is moved behind the merged conv (``norm="merged"``) or removed
   (``norm="none"``, the exact configuration).
2. **Module sharing.** Parameter-free modules that begin several candidates on the same input run once:
   the ReLU of a source node serves every conv of every out-edge (NAS-Bench-201: nor_conv_1x1 and
   nor_conv_3x3; darts-gold: the separable convs and the factorized reduction).
3. **Merging linear paths.** Per edge: ``conv(relu(x), sum_o w_o * pad(K_o))`` (a 1x1 kernel padded to the
   centre of the 3x3) and one linear operator on ``x`` with the kernel ``w_skip * delta + w_pool * J/count``
   (identity as a centred delta, average pooling as the fixed box kernel J): :func:`skip_pool`, one pass
   each way (C++ on the CPU, Triton on CUDA). NAS-Bench-201 pools with ``count_include_pad=False``: on the
   border ring a position averages fewer than 9 inputs; ``pool_border="exact"`` divides by that count,
   which equals the unmerged sum exactly; ``"include"`` divides by 9 everywhere (``count_include_pad=True``
   semantics on the border ring, the same interior).
4. **Normalisation** (``norm``, ``kernel_norm``). ``"merged"``: one BatchNorm (no affine, running
   statistics) per edge after the merged conv, and the conv group keeps its total weight
   ``s = sum_o w_o``: ``s * BN(conv(relu(x), sum_o (w_o / s) * pad(K_o_hat)))``, where ``K_o_hat`` is each
   op's kernel normalised to unit L2 norm per output filter (``kernel_norm=True``) so that each op enters
   the mix at a comparable scale, as its own BN would have put it, before the weights mix them. The scale
   ``s`` is applied as the BN's weight, so no extra activation is kept for its gradient. ``"none"``: no BN
   on the conv group; with ``kernel_norm=False`` the edge equals the unmerged weighted sum of the ops with
   their BN removed (tested in float64, gradients of the architecture weights included).

What is kept for the backward per edge: the merged conv's output (for its BN); the source's ReLU output
and the node states serve every edge. The unmerged edge keeps each conv's output, each BN's output and the
pooled output for the gradients of its weights; the merged edge gets those gradients through the kernel.

Derivation, pruning (a pruned or ``none`` op leaves the merged kernel) and the op modules (their
parameters keep their names, ``edges["2<-1"]["nor_conv_3x3"].conv.weight``) are those of
:class:`~stnas.supernet.mixed.MixedCellNet`; each op's own BN stays in the module but is not used.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stnas.ops._backend import compiled_module, in_layout, triton_module, unavailable_reason
from stnas.spaces.ops import get_op
from stnas.supernet.cell_blocks import ReLUConvBN, edge_key

NORMS = ("merged", "none")
POOL_BORDERS = ("exact", "include")


@dataclass(frozen=True)
class Simplify:
    """The options of the simplification (see the module's docstring); ``Simplify()`` is ``--simplify``."""

    norm: str = "merged"          # "merged": one BN per edge after the merged conv; "none": no BN there
    kernel_norm: bool = True      # each op's kernel at unit L2 norm per output filter before the mix
    pool_border: str = "exact"    # "exact": count_include_pad=False reproduced; "include": divisor 9 everywhere

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"Simplify: norm must be one of {NORMS}, got {self.norm!r}")
        if self.pool_border not in POOL_BORDERS:
            raise ValueError(f"Simplify: pool_border must be one of {POOL_BORDERS}, got {self.pool_border!r}")
        if not isinstance(self.kernel_norm, bool):
            raise ValueError(f"Simplify: kernel_norm must be a bool, got {self.kernel_norm!r}")

    @classmethod
    def of(cls, value) -> "Simplify | None":
        """None/False: off; True: the defaults; a dict of fields; a Simplify."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise ValueError(f"simplify: expected a bool, a dict of {list(asdict(cls()))} or a Simplify, got {value!r}")


def normalized_kernel(weight: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``weight`` (out, in, kh, kw) with every output filter scaled to unit L2 norm."""
    return weight / weight.flatten(1).norm(dim=1).clamp_min(eps)[:, None, None, None]


def pad_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A k x k kernel zero-padded to the centre of a size x size kernel (k and size odd)."""
    p = (size - weight.shape[-1]) // 2
    return F.pad(weight, (p, p, p, p)) if p else weight


def mixed_kernel(v: torch.Tensor, kernels, size: int) -> torch.Tensor:
    """``sum_o v[o] * pad(kernels[o])`` at ``size`` x ``size``: the merged conv's kernel."""
    kernel = None
    for o, k in enumerate(kernels):
        term = v[o] * pad_kernel(k, size)
        kernel = term if kernel is None else kernel + term
    return kernel


@dataclass(frozen=True)
class _EdgePlan:
    """One edge's merged schedule: ``convs`` (op index, op name) of the active ReLU-conv-BN ops merged into
    one conv of kernel ``kernel``; ``skip`` / ``pool``: op index of the active identity / average pooling
    (or None); ``alone``: other active ops, each run on its own."""

    convs: tuple
    kernel: int
    skip: int | None
    pool: int | None
    alone: tuple


class CppSkipPool(torch.autograd.Function):
    """``w_skip * x + w_pool * avg_pool2d(x, 3, 1, 1, count_include_pad=not exact)`` on the CPU in one
    C++ pass each way (``csrc/cpu/skip_pool.h``: a vertical 3-row sum into a row buffer, then a
    horizontal 3-pixel one; the backward gives ``dx``, ``dw_skip = <g, x>`` and ``dw_pool = <P^T g, x>``
    in the same pass). Only ``x`` (a node state, kept anyway) is saved.

    Measured on one CPU thread, 64x16x32x32 fp32 channels_last, forward + backward to x and both weights,
    inputs not in cache: 2.3 ms, against 4.1 ms for a depthwise conv with the border ring's correction
    from strips, 7.6 ms for :class:`PooledSkipPool` and 10.6 ms for the box-sum operator before them."""

    @staticmethod
    def forward(ctx, x, w_skip, w_pool, exact: bool):
        ctx.save_for_backward(x, w_skip, w_pool)
        ctx.exact = exact
        return compiled_module()[0].skip_pool_forward_cpu(x, float(w_skip), float(w_pool), exact)

    @staticmethod
    def backward(ctx, g):
        x, w_skip, w_pool = ctx.saved_tensors
        g = in_layout(g, x.shape, x.stride(), x.dtype)  # the kernel walks both with x's layout
        dx, dws, dwp = compiled_module()[0].skip_pool_backward_cpu(g, x, float(w_skip), float(w_pool), ctx.exact)
        return (dx if ctx.needs_input_grad[0] else None, w_skip.new_tensor(dws).reshape(w_skip.shape),
                w_pool.new_tensor(dwp).reshape(w_pool.shape), None)


class TritonSkipPool(torch.autograd.Function):
    """The same function in one Triton kernel each way (``kernels/skip_pool.py``: nine neighbour loads per
    element, the weights read on the device, the weights' gradients as per-program partial sums), for
    CUDA tensors; only ``x`` is saved. Tested on the CPU under TRITON_INTERPRET=1; its speed on a GPU is
    not measured (no GPU was lent to this work): ``bench/bench_toponas.py --device cuda`` times the step
    that runs it."""

    @staticmethod
    def forward(ctx, x, w_skip, w_pool, exact: bool):
        ctx.save_for_backward(x, w_skip, w_pool)
        ctx.exact = exact
        return _triton_skip_pool().skip_pool_forward(x, w_skip, w_pool, exact)

    @staticmethod
    def backward(ctx, g):
        x, w_skip, w_pool = ctx.saved_tensors
        g = in_layout(g, x.shape, x.stride(), x.dtype)  # the kernel walks both with x's layout
        dx, dws, dwp = _triton_skip_pool().skip_pool_backward(g, x, w_skip, w_pool, ctx.exact)
        return (dx if ctx.needs_input_grad[0] else None, dws.to(w_skip.dtype).reshape(w_skip.shape),
                dwp.to(w_pool.dtype).reshape(w_pool.shape), None)


class PooledSkipPool(torch.autograd.Function):
    """The same function with the device's own ``avg_pool2d`` (one kernel each way) and only ``x`` saved:
    ``P`` is self-adjoint up to its divisor, so ``dx = w_skip * g + w_pool * P^T g``, ``dw_skip = <g, x>``,
    ``dw_pool = <g, P x> = <P^T g, x>``, with ``P^T g`` avg_pool2d's own backward (two kernels and four
    elementwise ops each way). The fallback where neither the C++ extension (CPU) nor Triton (CUDA) is
    there, and the reference the GPU benchmark can set the Triton kernel against."""

    @staticmethod
    def forward(ctx, x, w_skip, w_pool, exact: bool):
        ctx.save_for_backward(x, w_skip, w_pool)
        ctx.exact = exact
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=not exact)
        return torch.addcmul(pooled.mul_(w_pool), x, w_skip)

    @staticmethod
    def backward(ctx, g):
        x, w_skip, w_pool = ctx.saved_tensors
        q = torch.ops.aten.avg_pool2d_backward(g, x, [3, 3], [1, 1], [1, 1], False, not ctx.exact, None)
        dx = torch.addcmul(q * w_pool, g, w_skip) if ctx.needs_input_grad[0] else None
        dws = (g * x).sum().reshape(w_skip.shape) if ctx.needs_input_grad[1] else None
        dwp = (q * x).sum().reshape(w_pool.shape) if ctx.needs_input_grad[2] else None
        return dx, dws, dwp, None


class MixedConv(torch.autograd.Function):
    """``conv2d(r, sum_o v_o * pad(K_o))`` (stride 1, same padding) whose backward, when the kernels
    ``K_o`` do not require grad (the architecture step freezes the weights), gets the mixing weights'
    gradients without the convolution's weight gradient.

    ``dv_o = <g, conv(r, K_o)>``; the merged form's autograd would take them as ``<dK, pad(K_o)>``, which
    needs ``dK``, a weight gradient as costly as the forward. Since the conv is linear in its kernel,
    ``z = sum_o v_o z_o`` with ``z_o = conv(r, K_o)`` and ``z`` the saved output, so one op's gradient
    follows from the others': ``dv_* = (<g, z> - sum_{o != *} v_o dv_o) / v_*``. The op left out (``*``)
    is the one with the largest kernel among those holding at least 1/16 of the total weight (the
    division by ``v_*`` scales the rounding error of ``<g, z>`` by at most 16 times the total); the others
    are ``<dK_o, K_o>`` with ``dK_o`` the weight gradient at the op's own size (a 1x1's is one GEMM, 1/9
    of a 3x3's work). NAS-Bench-201's merged edge thus computes a 1x1 weight gradient instead of the 3x3's
    (arch step on one CPU thread, NAS-Bench-201 skeleton: the convolutions' backward 363 -> 198 ms). When
    a kernel requires grad (the weight step), ``dK`` is computed anyway and ``dv_o = <dK, pad(K_o)>``.

    The choice of the op left out reads the mixing weights on the host. On CUDA the forward starts their
    copy to pinned host memory without waiting, and the backward waits on that copy's event only, long
    done by then, not on the stream (unmeasured: no GPU was lent to this work). Compiled graphs, which
    cannot branch on host values, take the plain merged conv instead."""

    @staticmethod
    def forward(ctx, r, v, size: int, *kernels):
        kernel = mixed_kernel(v, kernels, size)
        z = F.conv2d(r, kernel, None, 1, size // 2)
        ctx.size = size
        ctx.save_for_backward(r, v, kernel, z, *kernels)
        ctx.host_v = None
        if v.is_cuda and v.requires_grad:
            ctx.host_v = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
            ctx.host_v.copy_(v.detach(), non_blocking=True)
            ctx.host_v_ready = torch.cuda.Event()
            ctx.host_v_ready.record()
        return z

    @staticmethod
    def backward(ctx, g):
        r, v, kernel, z, *kernels = ctx.saved_tensors
        need_r, need_v, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[3:]
        p = ctx.size // 2
        dr, dk, _ = torch.ops.aten.convolution_backward(g, r, kernel, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                                                       [need_r, any(need_k), False])
        grads = [None] * len(kernels)
        dv = None
        if any(need_k):
            offsets = [(ctx.size - k.shape[-1]) // 2 for k in kernels]
            crops = [dk[..., a:a + k.shape[-2], a:a + k.shape[-1]] for a, k in zip(offsets, kernels)]
            grads = [v[o] * c if need_k[o] else None for o, c in enumerate(crops)]
            if need_v:
                dv = torch.stack([(c * k).sum() for c, k in zip(crops, kernels)])
        elif need_v:
            if ctx.host_v is not None:
                ctx.host_v_ready.synchronize()
                values = ctx.host_v.tolist()
            else:
                values = v.tolist()
            dv = _mixing_grads_from_output(g, r, v, values, z, kernels)
        return (dr if need_r else None, dv, None, *grads)


def _mixing_grads_from_output(g, r, v, values: list[float], z, kernels) -> torch.Tensor:
    """``dv_o = <g, conv(r, K_o)>`` for every o, with one op's taken from ``<g, z>`` (see MixedConv);
    ``values``: v on the host."""
    total = sum(abs(x) for x in values)
    eligible = [o for o, x in enumerate(values) if abs(x) * 16 >= total and x != 0]
    star = max(eligible, key=lambda o: (kernels[o].shape[-1] * kernels[o].shape[-2], abs(values[o])), default=None)
    dv = [None] * len(kernels)
    rest = g.new_zeros((), dtype=v.dtype)
    for o, k in enumerate(kernels):
        if o == star:
            continue
        # <g, conv(r, K_o)> = <dK_o, K_o> with dK_o the weight gradient at the op's own size: for a 1x1
        # one GEMM (0.2 ms at 64x16x32x32 on one CPU thread, against 0.3 ms for the 1x1 conv alone and
        # its output's product with g on top).
        p = k.shape[-1] // 2
        dk = torch.ops.aten.convolution_backward(g, r, k, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                                                 [False, True, False])[1]
        dv[o] = (dk * k).sum().to(v.dtype)
        rest = rest + v[o] * dv[o]
    if star is not None:  # None: every weight is zero, and every gradient was computed above
        dv[star] = ((g * z).sum().to(v.dtype) - rest) / v[star]
    return torch.stack(dv)


@functools.lru_cache(maxsize=None)
def _has_cpp_skip_pool() -> bool:
    return hasattr(compiled_module()[0], "skip_pool_forward_cpu")


def _triton_skip_pool():
    return triton_module("skip_pool")[0]  # skip_pool() has checked that it imports


@functools.lru_cache(maxsize=None)
def _has_triton_skip_pool() -> bool:
    return triton_module("skip_pool")[0] is not None


SKIP_POOL_IMPLS = ("cpp", "triton", "pool")


def skip_pool(x: torch.Tensor, w_skip: torch.Tensor, w_pool: torch.Tensor, exact: bool = True,
              impl: str | None = None) -> torch.Tensor:
    """``w_skip * x + w_pool * avg_pool2d(x, 3, 1, 1, count_include_pad=not exact)``: ``impl`` "cpp"
    (:class:`CppSkipPool`, the default for fp32/fp64 CPU tensors when the extension is built), "triton"
    (:class:`TritonSkipPool`, the default for CUDA tensors when Triton imports; CPU tensors only under
    TRITON_INTERPRET=1) or "pool" (:class:`PooledSkipPool`, every other case)."""
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    if impl is None:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _has_cpp_skip_pool():
            impl = "cpp"
        elif x.device.type == "cuda" and _has_triton_skip_pool():
            impl = "triton"
        else:
            impl = "pool"
    if impl not in SKIP_POOL_IMPLS:
        raise ValueError(f"skip_pool: impl must be one of {SKIP_POOL_IMPLS}, got {impl!r}")
    if impl == "pool":
        return PooledSkipPool.apply(x, w_skip, w_pool, exact)
    why = unavailable_reason("skip_pool", impl, x.device)
    if not why and impl == "cpp" and not _has_cpp_skip_pool():
        why = "stnas._C predates the skip + pooling kernel; rebuild it (pip install --no-build-isolation -e .)"
    if why:
        raise RuntimeError(f"skip_pool: impl {impl!r} cannot run here: {why}")
    if not dense:
        x = x.contiguous()
    return (CppSkipPool if impl == "cpp" else TritonSkipPool).apply(x, w_skip, w_pool, exact)


def _is_mergeable_pool(module) -> bool:
    return (isinstance(module, nn.AvgPool2d) and module.kernel_size in (3, (3, 3)) and module.stride in (1, (1, 1))
            and module.padding in (1, (1, 1)) and not module.ceil_mode and module.divisor_override is None)


def _is_mergeable_conv(module) -> bool:
    conv = getattr(module, "conv", None)
    return (isinstance(module, ReLUConvBN) and conv.stride == (1, 1) and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.bias is None and conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] % 2 == 1)


class SimplifiedMixedCell(nn.Module):
    """The simplified form of :class:`~stnas.supernet.mixed.MixedCell`: the same op modules (so the same
    parameter names), each edge computed as at most one dense conv (plus one BN) and one skip + pool pass.
    Built by :class:`~stnas.supernet.mixed.MixedCellNet` with ``simplify=...``; has the ``plan`` /
    ``_plan`` protocol of MixedCell."""

    def __init__(self, nodes: int, ops: tuple[str, ...], channels: int, partial_channels: int = 1,
                 simplify: Simplify | None = None):
        super().__init__()
        from stnas.supernet.mixed import MixedCell

        # The op modules and their layout are MixedCell's, so that weights carry the same names.
        base = MixedCell(nodes, ops, channels, partial_channels)
        self.nodes, self.ops, self.channels, self.k = base.nodes, base.ops, base.channels, base.k
        self.edge_list, self.edges = base.edge_list, base.edges
        self.simplify = simplify or Simplify()
        self.merged_bn = nn.ModuleDict()
        if self.simplify.norm == "merged":
            for dst, src in self.edge_list:
                self.merged_bn[edge_key(dst, src)] = nn.BatchNorm2d(channels // partial_channels, affine=False)
        self._plan = None

    def plan(self, mask: list[list[bool]]) -> tuple:
        """Per edge an :class:`_EdgePlan` for host mask ``mask`` (edges x ops)."""
        plans = []
        for e, (dst, src) in enumerate(self.edge_list):
            convs, alone, skip, pool = [], [], None, None
            for o, name in enumerate(self.ops):
                op = get_op(name)
                if not mask[e][o] or op.zero:
                    continue
                module = self.edges[edge_key(dst, src)][name]
                if op.identity:
                    skip = o
                elif _is_mergeable_conv(module):
                    convs.append((o, name))
                elif _is_mergeable_pool(module) and pool is None:
                    pool = o
                else:
                    alone.append((o, name))
            kernel = max((self.edges[edge_key(dst, src)][n].conv.kernel_size[0] for _, n in convs), default=0)
            plans.append(_EdgePlan(tuple(convs), kernel, skip, pool, tuple(alone)))
        return tuple(plans)

    def widened(self) -> None:
        """After :meth:`MixedCellNet.widen`: the merged BNs at the new width, with fresh statistics (the
        merged output's channels are mixes of differently copied filters, so no old statistic carries)."""
        for key, bn in self.merged_bn.items():
            fresh = nn.BatchNorm2d(self.channels // self.k, affine=False, eps=bn.eps, momentum=bn.momentum)
            self.merged_bn[key] = fresh.to(bn.running_mean.device)

    # ---------------------------------------------------------------- forward

    def _conv_group(self, key: str, plan: _EdgePlan, r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ops, cfg = self.edges[key], self.simplify
        kernels = [ops[name].conv.weight for _, name in plan.convs]
        if cfg.kernel_norm:
            kernels = [normalized_kernel(k) for k in kernels]
        wc = w[[o for o, _ in plan.convs]]  # the conv ops' weights
        if cfg.norm == "none":
            return F.conv2d(r, mixed_kernel(wc, kernels, plan.kernel), None, 1, plan.kernel // 2)
        total = wc[0] if len(wc) == 1 else wc.sum()
        # The mix at unit total weight (BN divides the scale out anyway; this keeps its eps as per-op BN
        # sees it), and the total weight back as the BN's weight, so no extra activation is saved for it.
        v = wc / total.clamp_min(1e-12)
        if (r.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(r.device.type)
                and not torch.compiler.is_compiling()):
            z = MixedConv.apply(r, v, plan.kernel, *kernels)  # z is BN's saved input too: no extra memory
        else:  # reduced precision (the output-based gradient would carry its rounding), or compiled
            z = F.conv2d(r, mixed_kernel(v, kernels, plan.kernel), None, 1, plan.kernel // 2)
        bn = self.merged_bn[key]
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        use_batch = bn.training or bn.running_mean is None
        # The weight is materialised: torch 2.13's CPU batch_norm backward on a channels_last input reads a
        # stride-0 (expanded) weight wrongly and returns garbage (1e22) for the input's gradient.
        return F.batch_norm(z, bn.running_mean, bn.running_var, total.expand(z.shape[1]).contiguous(), None,
                            use_batch, momentum, bn.eps)

    def _linear_group(self, plan: _EdgePlan, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        if plan.pool is None:
            return None if plan.skip is None else w[plan.skip] * x
        skip = w[plan.skip] if plan.skip is not None else w.new_zeros(())
        return skip_pool(x, skip, w[plan.pool], self.simplify.pool_border == "exact")

    def _edge(self, e: int, x: torch.Tensor, r: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor | None:
        """The mixed op of edge ``e`` on its source ``x`` (``r``: relu(x), shared by the source's out-edges)."""
        plan, (dst, src) = self._plan[e], self.edge_list[e]
        key = edge_key(dst, src)
        parts = []
        if plan.convs:
            parts.append(self._conv_group(key, plan, r, w))
        lin = self._linear_group(plan, x, w)
        if lin is not None:
            parts.append(lin)
        for o, name in plan.alone:
            parts.append(w[o] * self.edges[key][name](x))
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out.add_(p)  # every part is a fresh tensor that no backward reads: add in place
        return out

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: (edges, ops), the network's weights for this forward; masked entries are unused."""
        from stnas.supernet.mixed import join_partial

        k = self.k
        part = x.shape[1] // k
        states, bypass, relus = [x], [x[:, part:]] if k > 1 else None, {}
        for dst in range(1, self.nodes):
            row0 = dst * (dst - 1) // 2
            total = None
            for src in range(dst):
                e = row0 + src
                xs = states[src][:, :part] if k > 1 else states[src]
                r = None
                if self._plan[e].convs:  # module sharing: one ReLU per source node for all its out-edges
                    r = relus.get(src)
                    if r is None:
                        r = relus[src] = torch.relu(xs)
                y = self._edge(e, xs, r, weights[e])
                if y is not None:
                    total = y if total is None else total.add_(y)
            if total is None:  # every input is none or pruned: a zero node (as MixedCell)
                total = x.new_zeros((x.shape[0], part, *x.shape[2:]))
            states.append(join_partial(total, bypass, dst, k, part))
        return states[-1]


# ---------------------------------------------------------------------- darts-gold: module sharing only

def _relu_first(module) -> nn.Module | None:
    """The rest of ``module`` after its leading ReLU, as a callable on relu(x); None if it does not start
    with a ReLU we know (darts-gold: SepConv's relu1, FactorizedReduce's ReLU)."""
    from stnas.supernet.darts_blocks import FactorizedReduce, SepConv

    if isinstance(module, SepConv):
        rest = list(module)[1:]

        def run(r):
            for m in rest:
                r = m(r)
            return r
        return run
    if isinstance(module, FactorizedReduce):
        return lambda r: module.bn(torch.cat([module.conv1(r), module.conv2(r[:, :, 1:, 1:])], 1))
    return None


def shared_relu_cell_forward(cell, s0: torch.Tensor, s1: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """A :class:`~stnas.supernet.gated.GatedCell` forward in which every op that begins with a ReLU reads
    one relu(node) per source node (the same function, one ReLU and one saved activation per node
    instead of one per op)."""
    from stnas.ops import masked_path_sum
    from stnas.spaces.darts_cell import EDGES, INPUT_NODES, STEPS

    states = [cell.pre0(s0), cell.pre1(s1)]
    relus: dict[int, torch.Tensor] = {}
    n = len(cell.ops)
    for dst, (row0, count, active) in zip(range(INPUT_NODES, INPUT_NODES + STEPS), cell._active):
        ys = []
        for k, on in enumerate(active):
            if not on:
                ys.append(None)
                continue
            e, o = row0 + k // n, k % n
            src = EDGES[e][1]
            module = cell.edges[edge_key(dst, src)][cell.ops[o]]
            rest = _relu_first(module)
            if rest is None:
                ys.append(module(states[src]))
            else:
                r = relus.get(src)
                if r is None:
                    r = relus[src] = torch.relu(states[src])
                ys.append(rest(r))
        if any(active):
            states.append(masked_path_sum(ys, gates[row0:row0 + count].reshape(-1), active))
        else:
            states.append(cell.zero_node(states[1]))
    return torch.cat(states[INPUT_NODES:], 1)
