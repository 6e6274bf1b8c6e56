"""stnas.supernet.toponas (TopoNAS's simplification of mixed edges) against references written from the
definition: an edge is ``sum_o w_o * op_o(x)`` over the cell's own op modules called one by one, in
float64 (BN removed where the merged form is exact); where BN is moved, the merged formula is written
out with explicit batch means and variances. And ``--simplify`` from the command line for every
differentiable method on the demo."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from stnas.cli import main
from stnas.spaces import CellArch, Space
from stnas.supernet.cell_blocks import ReLUConvBN, edge_key
from stnas.supernet.gated import GatedCellNet
from stnas.supernet.mixed import MixedCell, MixedCellNet
from stnas.supernet.toponas import (MixedConv, Simplify, SimplifiedMixedCell, _has_cpp_skip_pool, _has_triton_skip_pool,
                                    _relu_first, pad_kernel, skip_pool)
from tests.conftest import colour_folder

TINY_CELL = {"type": "cell", "name": "nb201-tiny", "input": {"resolution": 16, "channels": 3}, "num_classes": 4,
             "cell": {"nodes": 4, "ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]},
             "skeleton": {"channels": 4, "cells_per_stage": 1, "stages": 3}}
TINY_GOLD = {"type": "darts-gold", "name": "darts-gold-tiny", "input": {"resolution": 8, "channels": 3},
             "num_classes": 4, "cell": {"ops": ["skip_connect", "sep_conv_3x3"]},
             "skeleton": {"channels": 4, "cells": 3, "stem_multiplier": 1}}
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES, EDGES = 4, 6


def random_mask(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(EDGES, len(OPS), generator=g) < 0.6
    mask[torch.arange(EDGES), torch.randint(0, len(OPS), (EDGES,), generator=g)] = True
    return mask.tolist()


def make_cell(simplify, channels=6, k=1, mask=None, seed=0):
    torch.manual_seed(seed)
    cell = SimplifiedMixedCell(NODES, OPS, channels, k, Simplify.of(simplify))
    mask = mask or [[True] * len(OPS) for _ in range(EDGES)]
    cell._plan = cell.plan(mask)
    return cell, mask


def reference_op(module, name, x, bn, kernel_norm=False):
    """One op on x from its standalone module: convs without BN unless ``bn``; the pool as NAS-Bench-201's
    (nn.AvgPool2d, count_include_pad=False)."""
    if isinstance(module, ReLUConvBN):
        w = module.conv.weight
        if kernel_norm:
            w = w / w.flatten(1).norm(dim=1)[:, None, None, None]
        y = F.conv2d(torch.relu(x), w, None, 1, module.conv.padding)
        return module.bn(y) if bn else y
    return module(x)


def reference_cell(cell, x, weights, mask, kernel_norm=False):
    """The float64 definition of a cell without BN on the conv paths: node d = sum over its edges and
    unmasked, non-zero ops of ``w * op(node s)``; with partial channels, DrNAS's MixedOp per edge."""
    k = cell.k
    nodes = [x]
    for dst in range(1, cell.nodes):
        total = 0
        for src in range(dst):
            e = dst * (dst - 1) // 2 + src
            h = nodes[src]
            part = h.shape[1] // k
            xs = h[:, :part]
            mixed = 0 * xs
            for o, name in enumerate(cell.ops):
                if mask[e][o] and name != "none":
                    mixed = mixed + weights[e, o] * reference_op(cell.edges[edge_key(dst, src)][name], name, xs,
                                                                 False, kernel_norm)
            if k > 1:
                c = h.shape[1]
                y = torch.cat([mixed, h[:, part:]], 1)
                mixed = y.view(y.shape[0], k, c // k, *y.shape[2:]).transpose(1, 2).reshape(y.shape)
            total = total + mixed
        nodes.append(total)
    return nodes[-1]


def grads(outputs, inputs):
    return torch.autograd.grad(outputs, inputs, allow_unused=True)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("masked,weights_kind", [(False, "softmax"), (True, "any")])
@pytest.mark.parametrize("kernel_norm", [False, True])
def test_merged_cell_without_bn_equals_the_unmerged_weighted_sum_forward_and_backward(k, masked, weights_kind,
                                                                                     kernel_norm):
    """norm="none": forward, and gradients of the input, every conv weight and the architecture weights,
    in float64, against the ops called one by one (BN removed; normalised kernels where kernel_norm)."""
    mask = random_mask(3 + k + 2 * masked) if masked else None
    cell, mask = make_cell({"norm": "none", "kernel_norm": kernel_norm}, channels=6, k=k, mask=mask, seed=k)
    cell.double()
    if weights_kind == "softmax":
        w = torch.randn(EDGES, len(OPS), dtype=torch.float64).masked_fill(~torch.tensor(mask), -torch.inf).softmax(-1)
    else:  # given weights, not normalised, some negative: taken as they are
        w = torch.randn(EDGES, len(OPS), dtype=torch.float64)
    w.requires_grad_(True)
    x = torch.randn(3, 6, 7, 9, dtype=torch.float64, requires_grad=True)  # odd sizes: border rings of both parities
    params = [p for p in cell.parameters()]
    out = cell(x, w)
    ref = reference_cell(cell, x, w, mask, kernel_norm)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    got = grads((out * g).sum(), [x, w, *params])
    want = grads((ref * g).sum(), [x, w, *params])
    for name, a, b in zip(["x", "w"] + [n for n, _ in cell.named_parameters()], got, want):
        if b is None:
            assert a is None or not a.abs().any(), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
    # Masked and none entries of the weights get exactly zero gradient.
    off = ~torch.tensor(mask) | torch.tensor([[n == "none" for n in OPS]] * EDGES)
    assert not got[1][off].abs().any()


def test_merged_bn_is_the_total_weight_times_one_bn_of_the_normalised_mix():
    """norm="merged": each edge's conv group is ``s * (z - mean) / sqrt(var + eps)``, z the conv of relu(x)
    with ``sum_o (w_o / s) pad(K_o / ||K_o||)``, batch mean and (biased) variance per channel, s = sum of the
    conv ops' weights; running statistics move by momentum with the unbiased variance."""
    cell, mask = make_cell(True, channels=5, seed=4)
    cell.double().train()
    w = torch.rand(EDGES, len(OPS), dtype=torch.float64)
    x = torch.randn(4, 5, 6, 6, dtype=torch.float64)
    out = cell(x, w)
    nodes = [x]
    for dst in range(1, NODES):
        total = 0
        for src in range(dst):
            e = dst * (dst - 1) // 2 + src
            ops = cell.edges[edge_key(dst, src)]
            h = nodes[src]
            lin = w[e, 1] * h + w[e, 4] * ops["avg_pool_3x3"](h)
            k1, k3 = (ops[n].conv.weight for n in ("nor_conv_1x1", "nor_conv_3x3"))
            k1, k3 = (kk / kk.flatten(1).norm(dim=1)[:, None, None, None] for kk in (k1, k3))
            s = w[e, 2] + w[e, 3]
            kernel = (w[e, 2] * F.pad(k1, (1, 1, 1, 1)) + w[e, 3] * k3) / s
            z = F.conv2d(torch.relu(h), kernel, padding=1)
            mean, var = z.mean((0, 2, 3), keepdim=True), z.var((0, 2, 3), unbiased=False, keepdim=True)
            bn = cell.merged_bn[edge_key(dst, src)]
            total = total + lin + s * (z - mean) / torch.sqrt(var + bn.eps)
            n = z.numel() / z.shape[1]
            torch.testing.assert_close(bn.running_mean, 0.1 * mean.flatten(), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var.flatten() * n / (n - 1), rtol=1e-9, atol=1e-12)
        nodes.append(total)
    torch.testing.assert_close(out, nodes[-1], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kernel_norm", [False, True])
def test_moving_bn_changes_nothing_where_an_edge_has_one_conv_op(kernel_norm):
    """With one conv op per edge its own BN and the merged BN see the same channels up to a per-filter
    scale, which BN divides out: the simplified cell equals MixedCell (per-op BN), eps set negligible."""
    mask = [[True, True, c == 2, c == 3, True] for c in (2, 3, 2, 3, 3, 2)]  # one conv op per edge
    torch.manual_seed(0)
    ref = MixedCell(NODES, OPS, 6)
    cell, _ = make_cell({"kernel_norm": kernel_norm}, channels=6, mask=mask)
    cell.edges.load_state_dict(ref.edges.state_dict())
    ref._plan = ref.plan(mask)
    for m in list(ref.modules()) + list(cell.modules()):
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-14
    ref.double(), cell.double()
    w = torch.rand(EDGES, len(OPS), dtype=torch.float64)
    x = torch.randn(4, 6, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(cell(x, w), ref(x, w), rtol=1e-8, atol=1e-9)


def test_pool_border_include_differs_only_on_the_border_ring():
    """On one edge: pool_border="exact" reproduces count_include_pad=False; "include" divides by 9
    everywhere (count_include_pad=True on the border); the interior is the same."""
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64)
    w = torch.rand(len(OPS), dtype=torch.float64)
    mask = [[False, True, False, False, True]] * EDGES  # skip and pool only
    outs = {}
    for border in ("exact", "include"):
        cell, _ = make_cell({"norm": "none", "pool_border": border}, channels=4, mask=mask)
        outs[border] = cell.double()._edge(0, x, None, w)
    torch.testing.assert_close(outs["exact"], w[1] * x + w[4] * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs["include"], w[1] * x + w[4] * F.avg_pool2d(x, 3, 1, 1, count_include_pad=True),
                               rtol=1e-12, atol=1e-12)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(outs["exact"][inner], outs["include"][inner], rtol=1e-12, atol=1e-12)
    assert (outs["exact"] - outs["include"]).abs().amax() > 1e-3


class CallCounter(TorchFunctionMode):
    def __init__(self, *names):
        super().__init__()
        self.calls = {n: 0 for n in names}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.calls:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


class OpCounter(TorchFunctionMode):
    """Counts dense conv2d, avg_pool2d, relu and batch_norm calls."""

    def __init__(self):
        super().__init__()
        self.calls = {"dense conv": 0, "avg_pool2d": 0, "relu": 0, "batch_norm": 0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name == "conv2d":
            groups = args[6] if len(args) > 6 else (kwargs or {}).get("groups", 1)
            self.calls["dense conv"] += groups == 1
        elif name in self.calls:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def test_each_edge_runs_one_conv_one_bn_and_one_skip_pool_pass_and_each_source_node_one_relu():
    cell, _ = make_cell(True, channels=4)
    with OpCounter() as counter:
        cell(torch.randn(2, 4, 6, 6), torch.rand(EDGES, len(OPS)))
    pools = 0 if _has_cpp_skip_pool() else EDGES  # the C++ pass, or avg_pool2d in the fallback
    assert counter.calls == {"dense conv": EDGES, "avg_pool2d": pools, "relu": NODES - 1, "batch_norm": EDGES}


def mixed_conv_definition(r, v, size, kernels):
    return F.conv2d(r, sum(v[o] * pad_kernel(k, size) for o, k in enumerate(kernels)), None, 1, size // 2)


# v: (share of the 1x1, of the 3x3, of the 5x5). The op left out of the direct computation is the largest
# kernel holding at least 1/16 of the total: the 5x5, the 3x3 when the 5x5 is below that, the 1x1 when
# both are; negative and zero weights too (all zero: every op computed directly).
MIXES = [(0.3, 0.5, 0.2), (0.5, 0.47, 0.03), (0.98, 0.01, 0.01), (-0.4, 0.9, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)]


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("kernels_grad", [False, True])
def test_mixed_conv_gradients_equal_the_merged_kernel_definition(mix, kernels_grad):
    """float64, odd sizes: the output and the gradients of r, the mixing weights and (when they require
    grad) the kernels, against autograd through ``conv2d(r, sum_o v_o pad(K_o))``; with frozen kernels
    MixedConv takes the mixing weights' gradient from its output (one op by subtraction)."""
    torch.manual_seed(sum(int(1000 * abs(m)) for m in mix))
    r = torch.randn(3, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    v = torch.tensor(mix, dtype=torch.float64, requires_grad=True)
    kernels = [torch.randn(5, 4, s, s, dtype=torch.float64, requires_grad=kernels_grad) for s in (1, 3, 5)]
    out = MixedConv.apply(r, v, 5, *kernels)
    ref = mixed_conv_definition(r, v, 5, kernels)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    inputs = [r, v] + (kernels if kernels_grad else [])
    for a, b in zip(grads((out * g).sum(), inputs), grads((ref * g).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mix", MIXES)
def test_mixed_conv_on_cuda_with_frozen_kernels_equals_the_definition(mix):
    """CUDA, float64: the mixing weights reach the backward through the pinned copy the forward started."""
    torch.manual_seed(1)
    r = torch.randn(3, 4, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    v = torch.tensor(mix, dtype=torch.float64, device="cuda", requires_grad=True)
    kernels = [torch.randn(5, 4, s, s, dtype=torch.float64, device="cuda") for s in (1, 3, 5)]
    out = MixedConv.apply(r, v, 5, *kernels)
    ref = mixed_conv_definition(r, v, 5, kernels)
    g = torch.randn_like(out)
    for a, b in zip(grads((out * g).sum(), [r, v]), grads((ref * g).sum(), [r, v])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_mixed_conv_mixing_gradient_in_fp32_is_as_accurate_as_the_definitions(memory_format):
    """fp32 at a search's size: the error of dv against the float64 definition stays within that of fp32
    autograd through the definition times total / v_* (the subtracted op's share: 2 for an even mix, 16
    at the bound, where the division scales the rounding of <g, z>; below it the 3x3 is not subtracted)."""
    torch.manual_seed(0)
    r = torch.relu(torch.randn(16, 8, 16, 16)).to(memory_format=memory_format)
    kernels = [torch.randn(8, 8, s, s).to(memory_format=memory_format) for s in (1, 3)]
    g = torch.randn(16, 8, 16, 16).to(memory_format=memory_format)
    for mix in ((0.5, 0.5), (1 - 1 / 16, 1 / 16), (1 - 1e-4, 1e-4)):  # the last: the 3x3 computed directly
        v = torch.tensor(mix, requires_grad=True)
        got = grads((MixedConv.apply(r, v, 3, *kernels) * g).sum(), [v])[0]
        fp32 = grads((mixed_conv_definition(r, v, 3, kernels) * g).sum(), [v])[0]
        v64 = v.detach().double().requires_grad_()
        want = grads((mixed_conv_definition(r.double(), v64, 3, [k.double() for k in kernels]) * g.double()).sum(),
                     [v64])[0]
        scale = float(want.abs().max())
        bound = min(1 / mix[1], 16) * float((fp32.double() - want).abs().max()) + 1e-6 * scale
        assert float((got.double() - want).abs().max()) <= bound


class WeightGradCounter(TorchDispatchMode):
    """Counts the convolution backwards that compute a weight gradient, by kernel size."""

    def __init__(self):
        super().__init__()
        self.weight_grads = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default and args[-1][1]:
            size = args[2].shape[-1]
            self.weight_grads[size] = self.weight_grads.get(size, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("norm", ["merged", "none"])
def test_with_frozen_conv_weights_the_architecture_gradient_needs_no_3x3_weight_gradient(norm):
    """The architecture step's backward (conv weights frozen): the merged edge's mixing gradient costs a
    1x1 weight gradient, never the 3x3's, and equals the one from a backward with the weights unfrozen
    (float64). norm="none" is the exact test configuration: it keeps autograd through the mixed kernel."""
    cell, _ = make_cell({"norm": norm}, channels=4, seed=2)
    cell.double()
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(EDGES, len(OPS), dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    want = grads((cell(x, w) * g).sum(), [x, w])
    for p in cell.parameters():
        p.requires_grad_(False)
    with WeightGradCounter() as counter:
        got = grads((cell(x, w) * g).sum(), [x, w])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert counter.weight_grads == ({1: EDGES} if norm == "merged" else {3: EDGES})


_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
IMPLS = [pytest.param("cpp", marks=pytest.mark.skipif(not _has_cpp_skip_pool(), reason="stnas._C not built")),
         pytest.param("triton", marks=pytest.mark.skipif(not (_INTERPRETING and _has_triton_skip_pool()),
                                                         reason="Triton on CPU tensors needs TRITON_INTERPRET=1")),
         "pool"]  # CppSkipPool (the CPU's), TritonSkipPool (CUDA's) and PooledSkipPool (the fallback)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 3, 3), (2, 1, 4, 3), (2, 2, 2, 4), (1, 1, 1, 1)])
def test_skip_pool_operator_backward_matches_finite_differences(impl, exact, shape):
    """Odd and even sizes, the smallest map with an interior (3x3) and maps without one."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ws, wp = (torch.randn((), dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b, c: skip_pool(a, b, c, exact, impl), (x, ws, wp))
    want = ws * x + wp * F.avg_pool2d(x, 3, 1, 1, count_include_pad=not exact)
    torch.testing.assert_close(skip_pool(x, ws, wp, exact, impl), want, rtol=1e-12, atol=1e-12)


def test_skip_pool_refuses_an_unknown_impl():
    with pytest.raises(ValueError, match="impl must be"):
        skip_pool(torch.randn(1, 1, 4, 4), torch.tensor(1.0), torch.tensor(1.0), True, "fft")


def test_skip_pool_says_in_one_line_why_an_impl_cannot_run_here(monkeypatch):
    from stnas.ops import _backend

    w = torch.tensor(1.0)
    with pytest.raises(RuntimeError, match="impl 'cpp' cannot run here: the C\\+\\+ backend runs on CPU tensors"):
        skip_pool(torch.randn(1, 1, 4, 4, device="meta"), w, w, True, "cpp")
    monkeypatch.setattr(_backend, "_triton_interpreting", lambda: False)
    with pytest.raises(RuntimeError, match="impl 'triton' cannot run here: .*TRITON_INTERPRET=1"):
        skip_pool(torch.randn(1, 1, 4, 4), w, w, True, "triton")


def test_skip_pool_on_a_strided_view_equals_the_definition():
    """A channel slice of a node (partial channels) is neither contiguous nor channels_last."""
    base = torch.randn(2, 6, 5, 7, dtype=torch.float64).to(memory_format=torch.channels_last)
    x = base[:, :3].requires_grad_(False)
    ws, wp = torch.tensor(0.4, dtype=torch.float64), torch.tensor(0.9, dtype=torch.float64)
    torch.testing.assert_close(skip_pool(x, ws, wp), ws * x + wp * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_skip_pool_in_fp32_matches_the_float64_definition_in_both_memory_formats(impl, exact, memory_format):
    """Both forms in fp32, NCHW and NHWC (the gradient arrives NCHW either way), against
    ``w_skip * x + w_pool * avg_pool2d(x)`` in float64: output, and gradients of x and both weights."""
    g = torch.Generator().manual_seed(5)
    x64 = torch.randn(4, 16, 9, 10, generator=g, dtype=torch.float64)
    go = torch.randn(4, 16, 9, 10, generator=g, dtype=torch.float64)
    w64 = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    xr = x64.clone().requires_grad_(True)
    want = w64[0] * xr + w64[1] * F.avg_pool2d(xr, 3, 1, 1, count_include_pad=not exact)
    want_grads = torch.autograd.grad((want * go).sum(), [xr, w64])
    x = x64.float().to(memory_format=memory_format).requires_grad_(True)
    w = w64.detach().float().requires_grad_(True)
    out = skip_pool(x, w[0], w[1], exact, impl)
    got_grads = torch.autograd.grad((out * go.float()).sum(), [x, w])
    assert out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skip_pool_on_cuda_runs_triton_by_default_and_matches_the_float64_definition(dtype, monkeypatch):
    """CUDA, channels_last, an odd map: the default impl is the Triton kernel, and its output and
    gradients match the float64 definition within the dtype's rounding (relative to the values' scale)."""
    assert _has_triton_skip_pool()
    g = torch.Generator().manual_seed(7)
    x64 = torch.randn(8, 24, 13, 11, generator=g, dtype=torch.float64)
    go = torch.randn(8, 24, 13, 11, generator=g, dtype=torch.float64)
    w64 = torch.tensor([0.6, 1.3], dtype=torch.float64, requires_grad=True)
    xr = x64.clone().requires_grad_(True)
    want = w64[0] * xr + w64[1] * F.avg_pool2d(xr, 3, 1, 1, count_include_pad=False)
    want_grads = torch.autograd.grad((want * go).sum(), [xr, w64])
    x = x64.to("cuda", dtype).to(memory_format=torch.channels_last).requires_grad_(True)
    w = w64.detach().to("cuda", torch.float32).requires_grad_(True)
    from stnas.kernels import skip_pool as kernels

    calls = []
    forward = kernels.skip_pool_forward
    monkeypatch.setattr(kernels, "skip_pool_forward", lambda *a: calls.append(1) or forward(*a))
    out = skip_pool(x, w[0], w[1], True)
    got_grads = torch.autograd.grad((out * go.to("cuda", dtype)).sum(), [x, w])
    assert calls == [1]
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double().cpu(), want, rtol=tol, atol=tol)
    for a, b in zip(got_grads, want_grads):
        scale = float(b.abs().max())
        torch.testing.assert_close(a.double().cpu(), b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("simplify", [True, {"kernel_norm": False}, {"norm": "none"}])
def test_simplified_cell_in_channels_last_equals_nchw(simplify):
    """The searches run channels_last on the CPU too: the same cell, outputs and gradients of the input,
    the architecture weights and every parameter, NHWC against NCHW in fp32. (torch's CPU batch_norm
    backward once returned garbage for a channels_last input with an expanded weight.)"""
    cell, _ = make_cell(simplify, channels=8, seed=2)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 8, 7, 9, generator=g)
    w = torch.rand(EDGES, len(OPS), generator=g)
    go = torch.randn(4, 8, 7, 9, generator=g)
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.to(memory_format=fmt).requires_grad_(True)
        wi = w.clone().requires_grad_(True)
        out = cell(xi, wi)
        results.append((out, *torch.autograd.grad((out * go).sum(), [xi, wi, *cell.parameters()], allow_unused=True)))
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*results):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("weighting", ["softmax", "dirichlet"])
def test_simplified_network_trains_derives_prunes_widens_and_round_trips(weighting):
    """The network around the simplified cells is MixedCellNet's: same parameter names and initial weights,
    beta gets gradients, derive/prune unchanged, partial channels widen, state_dict restores."""
    space = Space.from_dict(TINY_CELL)
    torch.manual_seed(0)
    plain = MixedCellNet(space, weighting)
    torch.manual_seed(0)
    net = MixedCellNet(space, weighting, simplify=True)
    params = dict(net.named_parameters())
    for name, p in plain.named_parameters():
        assert torch.equal(params[name], p), name
    x = torch.randn(2, 3, 16, 16)
    net(x).sum().backward()
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0
    with torch.no_grad():
        net.beta.copy_(torch.randn_like(net.beta))
        plain.beta.copy_(net.beta)
    assert net.derive() == plain.derive()
    net.prune(3)
    plain.prune(3)
    assert torch.equal(net.mask, plain.mask) and net(x).shape == (2, 4)
    other = MixedCellNet(space, weighting, simplify=True)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.mask, net.mask)
    pc = MixedCellNet(space, weighting, partial_channels=4, simplify=True)
    pc(x).sum().backward()
    pc.widen(2)
    assert pc(x).shape == (2, 4) and pc.cells()[0].merged_bn["1<-0"].num_features == 2


def test_darts_gold_shares_one_relu_per_source_and_computes_the_same():
    """darts-gold (GOLD-NAS): module sharing only; the output and every gradient equal the unshared cell's,
    with one ReLU per source node that feeds a separable conv or a factorized reduction."""
    torch.manual_seed(0)
    space = Space.from_dict(TINY_GOLD)
    plain = GatedCellNet(space).double()
    shared = GatedCellNet(space, simplify=True).double()
    shared.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with CallCounter("relu") as c0:
        y0 = plain(x)
    with CallCounter("relu") as c1:
        y1 = shared(x)
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    g0 = grads(y0.sum(), list(plain.parameters()))
    g1 = grads(y1.sum(), list(shared.parameters()))
    for (name, _), a, b in zip(plain.named_parameters(), g0, g1):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14, msg=name)
    # Every op that begins with a ReLU (separable convs; factorized reductions on strided edges) shares one
    # ReLU per source node.
    saved = 0
    for cell in plain.cells:
        first = [(key.split("<-")[1], m) for key, ops in cell.edges.items() for m in ops.values()
                 if _relu_first(m) is not None]
        saved += len(first) - len({src for src, _ in first})
    assert saved > 0 and c0.calls["relu"] - c1.calls["relu"] == saved


def test_simplify_options_are_checked():
    with pytest.raises(ValueError, match="norm"):
        Simplify(norm="batch")
    with pytest.raises(ValueError, match="pool_border"):
        Simplify(pool_border="zero")
    assert Simplify.of(False) is None and Simplify.of(True) == Simplify()


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """4 classes of 8x8 JPEGs whose colour says the class, 8 train and 2 val each, and the space file."""
    root = colour_folder(tmp_path_factory.mktemp("topo"), 4, {"train": 8, "val": 2}, size=8, step=60)
    (root / "cell.json").write_text(json.dumps({**TINY_CELL, "input": {"resolution": 8, "channels": 3}}))
    return root


@pytest.mark.parametrize("method", ["darts", "drnas", "goldnas"])
def test_simplify_runs_from_the_command_line(method, tiny_images, tmp_path, capsys):
    """`stnas search --method M --simplify` (tiny data: the built-in demo takes minutes per method on two
    cores): the run records the switch and its architecture file has the usual format."""
    out = tmp_path / "out"
    space = tiny_images / "cell.json"  # GOLD-NAS on the cell space: the merged edges (darts-gold: tested above)
    argv = ["search", "--method", method, "--simplify", "--space", str(space), "--data", str(tiny_images),
            "--out", str(out), "--epochs", "2" if method == "goldnas" else "1", "--batch-size", "8", "--no-progress",
            "--threads", "1"]
    if method == "goldnas":
        argv += ["--warmup-epochs", "1", "--stable-epochs", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["method"]["simplify"] is True
    if method == "goldnas":
        archs = sorted((out / "archs").glob("arch_*.json"))
        assert archs
        entry = json.loads(archs[0].read_text())
        assert set(entry) >= {"space", "arch", "madds", "params", "accuracy", "epoch"}
        Space.from_dict(entry["space"]).arch_from_dict(entry["arch"])
    else:
        derived = json.loads((out / "derived.json").read_text())
        assert set(derived) >= {"space", "epoch", "arch"} and derived["epoch"] == 1
        arch = CellArch.from_nb201(derived["arch"]["nb201"])
        assert list(arch.ops) == derived["arch"]["ops"] and len(arch.ops) == EDGES
        Space.from_dict(derived["space"]).validate(arch)
