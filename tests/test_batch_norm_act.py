"""stnas.ops.batch_norm_act and BatchNormAct2d: every backend against nn.BatchNorm2d + activation in
float64 (tolerance relative to what a same-precision PyTorch reference achieves), running statistics
over many steps, eval mode, layouts, odd shapes, torch.library checks, and the bad-input messages."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnas.ops import BatchNormAct2d, batch_norm_act, last_backend
from tests.conftest import device_backend_params, relative_error

BACKENDS = device_backend_params("batch_norm_act")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# N*H*W = 42, 20, 5, 198: no multiple of a block; C = 1; H = W = 1; C = 37 (not a power of 2).
SHAPES = [(2, 5, 7, 3), (1, 1, 4, 5), (5, 3, 1, 1), (2, 37, 9, 11)]
# (activation, with an addend): MBConv's expand/depthwise, ResNet's relu(bn + shortcut), MBConv's projection.
VARIANTS = [("relu6", False), ("relu", True), ("none", True)]


def _activate(z, act):
    return {"relu6": F.relu6, "relu": F.relu, "none": lambda t: t}[act](z)


def _eager(x, weight, bias, running_mean, running_var, addend, training, momentum, eps, act):
    """The definition in PyTorch's own ops, at whatever precision its inputs have."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return _activate(y if addend is None else y + addend, act)


def _inputs(shape, dtype, device, channels_last, with_addend, mean=1.5):
    c = shape[1]
    x = (torch.randn(shape, device=device) * 2 + mean)
    addend = torch.randn(shape, device=device) if with_addend else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        addend = None if addend is None else addend.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(c, device=device) + 0.5
    bias = torch.randn(c, device=device)
    return x.to(dtype), weight, bias, (None if addend is None else addend.to(dtype))


def _tolerance(dtype):
    # Never looser than twice what plain PyTorch at the same precision achieves, plus this floor.
    return {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act,with_addend", VARIANTS, ids=[f"{a}{'+add' if w else ''}" for a, w in VARIANTS])
def test_training_forward_backward_and_running_stats_match_float64(device, backend, dtype, channels_last, shape,
                                                                   act, with_addend, seeded):
    x, weight, bias, addend = _inputs(shape, dtype, device, channels_last, with_addend)
    c = shape[1]
    rm, rv = torch.randn(c, device=device), torch.rand(c, device=device) + 0.5
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias) + ((addend,) if with_addend else ())]
    xg, wg, bg = leaves[:3]
    ag = leaves[3] if with_addend else None
    rm_got, rv_got = rm.clone(), rv.clone()
    y = batch_norm_act(xg, wg, bg, rm_got, rv_got, ag, training=True, momentum=0.1, act=act, backend=backend)
    assert last_backend("batch_norm_act") == backend
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    rm64, rv64 = rm.double(), rv.double()
    ref = _eager(ref_leaves[0], ref_leaves[1], ref_leaves[2], rm64, rv64, ref_leaves[3] if with_addend else None,
                 True, 0.1, 1e-5, act)
    same_leaves = [t.detach().requires_grad_() for t in leaves]
    same = _eager(same_leaves[0], same_leaves[1], same_leaves[2], rm.clone(), rv.clone(),
                  same_leaves[3] if with_addend else None, True, 0.1, 1e-5, act)
    bound = 2 * relative_error(same, ref) + _tolerance(dtype)
    assert relative_error(y, ref) <= bound
    # Statistics in float32 whatever the input dtype: the running ones are as exact as float32 allows
    # of the (rounded) input.
    assert relative_error(rm_got, rm64) <= 1e-5 and relative_error(rv_got, rv64) <= 1e-5

    g = torch.randn(shape, device=device).to(dtype)
    y.backward(g)
    assert last_backend("batch_norm_act_backward") == backend
    ref.backward(g.double())
    same.backward(g)
    names = ["x", "weight", "bias", "addend"]
    for name, got, r, s in zip(names, leaves, ref_leaves, same_leaves):
        # Relu6's mask at y == 6 / y == 0 can differ where rounding moves y across the edge: the same-
        # precision reference has the same problem and the bound contains it.
        gb = 2 * relative_error(s.grad, r.grad) + _tolerance(dtype)
        assert relative_error(got.grad, r.grad) <= gb, f"grad of {name}"
        if name in ("x", "addend"):
            assert got.grad.stride() == x.stride(), f"grad of {name} changed the layout"


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("act,with_addend", VARIANTS, ids=[f"{a}{'+add' if w else ''}" for a, w in VARIANTS])
def test_eval_mode_uses_and_keeps_the_running_statistics(device, backend, channels_last, act, with_addend, seeded):
    x, weight, bias, addend = _inputs((3, 6, 5, 7), torch.float32, device, channels_last, with_addend)
    rm, rv = torch.randn(6, device=device), torch.rand(6, device=device) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    xg, wg, bg = (t.detach().float().requires_grad_() for t in leaves)
    y = batch_norm_act(xg, wg, bg, rm, rv, addend, training=False, act=act, backend=backend)
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)
    ref = _eager(*leaves, rm.double(), rv.double(), None if addend is None else addend.double(), False, 0.1, 1e-5,
                 act)
    assert relative_error(y, ref) <= 1e-6
    g = torch.randn_like(y)
    y.backward(g)
    ref.backward(g.double())
    for got, r in zip((xg, wg, bg), leaves):
        assert relative_error(got.grad, r.grad) <= 1e-5


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_statistics_of_a_large_mean_keep_their_precision(device, backend, seeded):
    # |mean| >> std: a naive E[x^2] - E[x]^2 in float32 loses every digit of the variance here.
    x = torch.randn(4, 3, 9, 9, device=device) * 0.01 + 1000.0
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
    batch_norm_act(x, None, None, rm, rv, act="none", momentum=1.0, backend=backend)
    var = x.double().var((0, 2, 3), unbiased=True)
    assert relative_error(rv, var) <= 1e-3


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_module_tracks_nn_batchnorm2d_over_many_steps(device, backend, momentum, channels_last, seeded):
    """Training steps with an optimizer: outputs, gradients, running statistics and num_batches_tracked
    stay with nn.BatchNorm2d + ReLU6 + addend; then eval mode and state-dict interchange."""
    c = 7
    ours = BatchNormAct2d(c, momentum=momentum, act="relu6", backend=backend).to(device)
    theirs = nn.BatchNorm2d(c, momentum=momentum).to(device)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for step in range(6):
        shape = (3 + step % 2, c, 5, 3 + step)
        x = torch.randn(shape, device=device) * 2 + 1
        a = torch.randn(shape, device=device)
        if channels_last:
            x, a = x.contiguous(memory_format=torch.channels_last), a.contiguous(memory_format=torch.channels_last)
        g = torch.randn(shape, device=device)
        y1 = ours(x, a)
        y2 = F.relu6(theirs(x) + a)
        assert relative_error(y1, y2) <= 1e-5
        y1.backward(g)
        y2.backward(g)
        for p1, p2 in zip(ours.parameters(), theirs.parameters()):
            assert relative_error(p1.grad, p2.grad) <= 1e-4
        opt_ours.step()
        opt_theirs.step()
        opt_ours.zero_grad()
        opt_theirs.zero_grad()
        assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == step + 1
        for k in ("running_mean", "running_var"):
            assert relative_error(getattr(ours, k), getattr(theirs, k)) <= 1e-5, k
    ours.eval()
    theirs.eval()
    x = torch.randn(2, c, 4, 4, device=device)
    assert relative_error(ours(x), F.relu6(theirs(x))) <= 1e-6
    assert ours.num_batches_tracked.item() == 6
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_module_is_a_batchnorm2d_and_loads_its_state_dict():
    bn = nn.BatchNorm2d(4)
    bn.running_mean.normal_()
    bn.num_batches_tracked += 3
    ours = BatchNormAct2d(4, act="relu")
    ours.load_state_dict(bn.state_dict())
    assert isinstance(ours, nn.BatchNorm2d)
    assert torch.equal(ours.running_mean, bn.running_mean) and ours.num_batches_tracked.item() == 3
    # Without running statistics (track_running_stats=False) eval mode still normalises by the batch.
    free = BatchNormAct2d(4, track_running_stats=False, act="none").eval()
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(free(x), F.batch_norm(x, None, None, free.weight, free.bias, True))


def test_module_falls_back_to_plain_ops_for_an_addend_of_another_dtype():
    m = BatchNormAct2d(3, act="relu")
    x, a = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16), torch.randn(2, 3, 4, 4)
    ref = nn.BatchNorm2d(3)
    out = m(x, a)
    assert out.dtype == torch.float32  # as bn(x) + a promotes
    torch.testing.assert_close(out, F.relu(ref(x) + a))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_every_output_element_is_written(device, backend, seeded):
    # Poison the allocator first: freed NaN blocks of the outputs' size are what empty_like gets back.
    shape = (3, 19, 5, 7)
    for _ in range(4):
        torch.full(shape, float("nan"), device=device)
    x, weight, bias, addend = _inputs(shape, torch.float32, device, True, True)
    xg = x.detach().requires_grad_()
    ag = addend.detach().requires_grad_()
    y = batch_norm_act(xg, weight, bias, None, None, ag, act="none", backend=backend)
    assert torch.isfinite(y).all()
    y.backward(torch.ones_like(y))
    assert torch.isfinite(xg.grad).all() and torch.isfinite(ag.grad).all()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend, seeded):
    x, weight, bias, addend = _inputs((2, 4, 3, 5), torch.float32, device, True, True)
    rm, rv = torch.zeros(4, device=device), torch.ones(4, device=device)
    fwd = torch.ops.stnas.batch_norm_act_forward.default
    torch.library.opcheck(fwd, (x, weight, bias, rm, rv, addend, True, 0.1, 1e-5, "relu6", backend))
    torch.library.opcheck(fwd, (x, None, None, rm, rv, None, False, 0.1, 1e-5, "none", backend))
    # The backward op has no derivative of its own (no double backward): checked on plain tensors.
    y, mean, invstd = fwd(x, weight, bias, rm.clone(), rv.clone(), addend, True, 0.1, 1e-5, "relu", backend)
    bwd = torch.ops.stnas.batch_norm_act_backward.default
    torch.library.opcheck(bwd, (torch.randn_like(x), x, y, weight, mean, invstd, True, "relu", True, backend))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("act", ["relu", "none"])
def test_gradcheck_float64(training, act, seeded):
    x = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(2, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    rm, rv = torch.randn(2, dtype=torch.float64), torch.rand(2, dtype=torch.float64) + 0.5

    def fn(x, w, b, a):
        return batch_norm_act(x, w, b, rm.clone(), rv.clone(), a, training=training, act=act)

    assert torch.autograd.gradcheck(fn, (x, w, b, a))


def test_torch_compile_traces_the_module_in_one_graph(seeded):
    m = BatchNormAct2d(5, act="relu")
    ref = nn.BatchNorm2d(5)
    fn = torch.compile(lambda x, a: m(x, a), fullgraph=True, backend="aot_eager")
    for _ in range(3):
        x = torch.randn(4, 5, 3, 3, requires_grad=True)
        a = torch.randn(4, 5, 3, 3)
        out = fn(x, a)
        torch.testing.assert_close(out, F.relu(ref(x.detach()) + a))
        out.sum().backward()
        assert x.grad is not None and m.weight.grad is not None
    torch.testing.assert_close(m.running_mean, ref.running_mean)
    torch.testing.assert_close(m.running_var, ref.running_var)
    assert m.num_batches_tracked.item() == 3


@pytest.mark.parametrize(
    "call,error,pattern",
    [
        (lambda: batch_norm_act(torch.randn(2, 3, 4)), ValueError, r"x must be 4-D \(N, C, H, W\)"),
        (lambda: batch_norm_act(torch.ones(2, 3, 2, 2, dtype=torch.int64)), TypeError, "x must be float32"),
        (lambda: batch_norm_act("x"), TypeError, "x must be a tensor"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), act="gelu"), ValueError, "act must be one of"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), torch.ones(4)), ValueError,
         r"weight must have shape \(3,\)"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), None, torch.ones(3, dtype=torch.int32)), TypeError,
         "bias must be a floating-point tensor"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), running_mean=torch.zeros(3)), ValueError,
         "give both running_mean and running_var"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), training=False), ValueError, "eval mode .* needs"),
        (lambda: batch_norm_act(torch.randn(1, 3, 1, 1)), ValueError, "more than one value per channel"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), addend=torch.randn(2, 3, 2, 1)), ValueError,
         "addend must match x"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), torch.ones(3, device="meta")), ValueError,
         "weight is on meta"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2), backend="fast"), ValueError, "backend must be 'auto'"),
        (lambda: batch_norm_act(torch.randn(2, 3, 2, 2, dtype=torch.float64), backend="cpp"), TypeError,
         "takes float32, bfloat16 or float16"),
        (lambda: BatchNormAct2d(3, act="tanh"), ValueError, "act must be one of"),
    ],
)
def test_bad_input_gives_one_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_statistics_do_not_depend_on_the_run(seeded):
    x = torch.randn(16, 40, 17, 17, device="cuda").contiguous(memory_format=torch.channels_last)
    outs = [batch_norm_act(x, None, None, act="none", backend="cuda") for _ in range(2)]
    assert torch.equal(outs[0], outs[1])


class _OldConvBN(nn.Sequential):
    """The layout the supernet's blocks had before the fused op: Conv2d, nn.BatchNorm2d, nn.ReLU6."""

    def __init__(self, conv, bn, act):
        super().__init__(*([conv, bn] + ([nn.ReLU6()] if act else [])))

    def forward(self, x, addend=None):
        y = super().forward(x)
        return y if addend is None else y + addend  # the old MBConv's x + body(x)


def _old_layout(net):
    """A copy of ``net`` whose every ConvBN is the unfused Conv2d + BatchNorm2d (+ ReLU6)."""
    import copy

    from stnas.supernet.blocks import ConvBN

    old = copy.deepcopy(net)
    for parent in list(old.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvBN):
                fused = child[1]
                bn = nn.BatchNorm2d(fused.num_features, fused.eps, fused.momentum)
                bn.load_state_dict(fused.state_dict())
                setattr(parent, name, _OldConvBN(child[0], bn, fused.act == "relu6"))
    assert not any(isinstance(m, BatchNormAct2d) for m in old.modules())
    return old


def test_supernet_checkpoints_move_between_the_fused_and_the_old_layout(seeded):
    import random

    from stnas.spaces import Space
    from stnas.supernet import SuperNet

    space = Space.load("demo")
    net = SuperNet(space)
    assert any(isinstance(m, BatchNormAct2d) for m in net.modules())
    old = _old_layout(net)
    assert list(net.state_dict()) == list(old.state_dict())
    rng = random.Random(4)
    x = torch.randn(3, 3, 32, 32)
    for step in range(3):  # training steps: outputs, BN statistics and num_batches_tracked agree
        arch = space.sample(rng)
        torch.testing.assert_close(net(x, arch), old(x, arch), rtol=1e-5, atol=1e-5)
    for (k, a), b in zip(net.state_dict().items(), old.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    # A checkpoint of one layout loads strictly into the other and back, and gives the same outputs.
    old.load_state_dict(net.state_dict())
    fresh = SuperNet(space)
    fresh.load_state_dict(old.state_dict())
    fresh.eval()
    old.eval()
    arch = space.largest()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, arch), old(x, arch), rtol=1e-5, atol=1e-5)
