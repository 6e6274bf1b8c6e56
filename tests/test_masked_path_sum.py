"""stnas.ops.masked_path_sum: every backend against the float64 definition (tolerance relative to what
a same-precision PyTorch reference achieves), gradients, masked paths never read, layouts, checks."""
import pytest
import torch

from stnas.ops import last_backend, masked_path_sum
from tests.conftest import device_backend_params, relative_error

BACKENDS = device_backend_params("masked_path_sum")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1,), (7,), (1023,), (4097,), (2, 3, 5, 7), (3, 16, 9, 11)]
MASKS = {1: [1], 3: [1, 0, 1], 5: [0, 1, 1, 0, 1], 9: [1] * 9}


def _paths(k, shape, dtype, device, channels_last=False, requires_grad=True):
    ys = []
    for _ in range(k):
        y = torch.randn(shape, device=device, dtype=torch.float32)
        if channels_last and len(shape) == 4:
            y = y.contiguous(memory_format=torch.channels_last)
        ys.append(y.to(dtype).requires_grad_(requires_grad))
    return ys


def _eager(ys, weights, mask):
    """The definition in autograd-able PyTorch ops, at whatever precision its inputs have."""
    terms = [w * y for y, w, m in zip(ys, weights, mask) if m]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _tolerance(dtype):
    # Never looser than a multiple of what plain PyTorch at the same precision achieves (+ an fp32 floor).
    return {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", sorted(MASKS))
def test_forward_and_backward_match_float64(device, backend, dtype, shape, k, seeded):
    mask = MASKS[k]
    ys = _paths(k, shape, dtype, device, channels_last=True)
    weights = torch.rand(k, device=device, requires_grad=True)
    out = masked_path_sum(ys, weights, mask, backend=backend)
    assert last_backend("masked_path_sum") == backend
    assert out.dtype == dtype and out.shape == ys[0].shape and out.stride() == ys[0].stride()

    ys64 = [y.detach().double().requires_grad_() for y in ys]
    w64 = weights.detach().double().requires_grad_()
    ref64 = _eager(ys64, w64, mask)
    same_precision = _eager([y.detach() for y in ys], weights.detach().to(dtype), mask)
    bound = 2 * relative_error(same_precision, ref64) + _tolerance(dtype)
    assert relative_error(out, ref64) <= bound

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    assert last_backend("masked_path_sum_backward") == backend
    ref64.backward(grad_out.double())
    for i, (y, y64) in enumerate(zip(ys, ys64)):
        if mask[i]:
            assert relative_error(y.grad, y64.grad) <= bound, f"grad of path {i}"
        else:
            assert y.grad is None, f"masked path {i} got a gradient"
    active = [i for i in range(k) if mask[i]]
    # The weights' gradient is a dot product over all elements: fp32 accumulation of low-precision inputs.
    assert relative_error(weights.grad[active], w64.grad[active]) <= 1e-4 + _tolerance(dtype) / 4
    assert (weights.grad[[i for i in range(k) if not mask[i]]] == 0).all()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_masked_paths_are_never_read(device, backend, seeded):
    ys = _paths(4, (3, 8, 5, 5), torch.float32, device)
    poisoned = [torch.full_like(y, float("nan")).requires_grad_() for y in ys]
    mixed = [ys[0], poisoned[1], ys[2], None]
    weights = torch.rand(4, device=device, requires_grad=True)
    out = masked_path_sum(mixed, weights, [1, 0, 1, 0], backend=backend)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(weights.grad).all() and poisoned[1].grad is None
    torch.testing.assert_close(out, weights[0] * ys[0] + weights[2] * ys[2])


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_non_contiguous_and_mixed_layout_paths_are_summed_correctly(device, backend, seeded):
    base = torch.randn(2, 6, 5, 4, device=device)
    a = base.transpose(1, 3)  # a strided view
    b = torch.randn(2, 4, 5, 6, device=device).contiguous(memory_format=torch.channels_last)
    c = torch.randn(2, 4, 5, 6, device=device)
    w = torch.tensor([0.5, -2.0, 3.0], device=device)
    out = masked_path_sum([a, b, c], w, backend=backend)
    torch.testing.assert_close(out, 0.5 * a - 2.0 * b + 3.0 * c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_one_channel_paths_dense_in_both_layouts_are_summed_with_their_gradients(device, backend, seeded):
    """A one-channel map is contiguous and channels_last at once, with strides that differ in the channel
    dim (a partial-channel DrNAS node on a channels_last search): summed, and differentiated, as defined."""
    a = torch.randn(3, 1, 5, 4, device=device, requires_grad=True)
    b = torch.randn(3, 1, 5, 4, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
    assert a.stride() != b.stride() and b.is_contiguous()
    w = torch.tensor([0.5, -2.0], device=device, requires_grad=True)
    out = masked_path_sum([a, b], w, backend=backend)
    g = torch.randn_like(out)
    ref = [t.detach().double().requires_grad_(True) for t in (a, b, w)]
    want = ref[2][0] * ref[0] + ref[2][1] * ref[1]
    torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-6)
    got = torch.autograd.grad((out * g).sum(), [a, b, w])
    for x, y in zip(got, torch.autograd.grad((want * g.double()).sum(), ref)):
        torch.testing.assert_close(x.double(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gradient_of_an_expanded_grad_out(device, backend, seeded):
    """x.sum().backward() hands the op a stride-0 gradient; the op must lay it out first."""
    ys = _paths(2, (4, 3, 2, 2), torch.float32, device, channels_last=True)
    w = torch.tensor([2.0, 3.0], device=device, requires_grad=True)
    masked_path_sum(ys, w, backend=backend).sum().backward()
    torch.testing.assert_close(ys[0].grad, torch.full_like(ys[0], 2.0))
    torch.testing.assert_close(w.grad, torch.stack([ys[0].sum(), ys[1].sum()]).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_weights_without_grad_do_not_keep_the_paths_alive(device, backend, seeded):
    ys = _paths(3, (64,), torch.float32, device)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = masked_path_sum(ys, torch.rand(3, device=device), backend=backend)
    assert not any(s.shape == ys[0].shape for s in saved), "the paths were saved for backward"
    out.backward(torch.ones_like(out))
    assert all(y.grad is not None for y in ys)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend, seeded):
    ys = [y.detach().requires_grad_() for y in _paths(3, (2, 4, 3, 3), torch.float32, device, True)]
    w = torch.rand(5, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.stnas.masked_path_sum.default, (ys, w, [0, 2, 4], backend))
    # The backward op has no derivative of its own (no double backward): check it on plain tensors.
    g = torch.randn_like(ys[0])
    plain = [y.detach() for y in ys]
    bwd = torch.ops.stnas.masked_path_sum_backward.default
    torch.library.opcheck(bwd, (g, plain, w.detach(), [0, 2, 4], True, backend))
    torch.library.opcheck(bwd, (g, [], w.detach(), [0, 2, 4], False, backend))


def test_gradcheck_float64(seeded):
    ys = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, w: masked_path_sum([a, b, c], w, [1, 0, 1]), (*ys, w))


def test_torch_compile_traces_the_op_in_one_graph(seeded):
    ys = _paths(3, (2, 3, 4, 4), torch.float32, "cpu")
    w = torch.rand(3, requires_grad=True)
    fn = torch.compile(lambda a, b, c, w: masked_path_sum([a, b, c], w, [1, 1, 0]) * 2, fullgraph=True)
    out = fn(*ys, w)
    torch.testing.assert_close(out, 2 * (w[0] * ys[0] + w[1] * ys[1]))
    out.sum().backward()
    assert ys[2].grad is None and ys[0].grad is not None


def test_all_paths_masked_gives_zeros_without_reading():
    y = torch.full((3, 4), float("nan"))
    out = masked_path_sum([y, None], torch.ones(2), [0, 0])
    assert (out == 0).all() and out.shape == y.shape


def test_default_weights_are_ones_and_default_mask_is_the_given_paths():
    a, b = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(masked_path_sum([a, None, b]), a + b)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_unit_weight_gradients_equal_those_of_a_plain_sum(device, backend, seeded):
    # Without weights the backward hands grad_out to every path (no kernel); the same tensor given twice
    # must still receive the gradient twice, and downstream autograd must see ordinary gradients.
    shape = (3, 16, 9, 11)
    a, b = (torch.randn(shape, device=device, dtype=torch.float64) for _ in range(2))
    grad = torch.randn(shape, device=device, dtype=torch.float64)
    ref = [x.clone().requires_grad_() for x in (a, b)]
    ((ref[0] * 3) + ref[1] + ref[1]).mul(2).backward(grad)
    got = [x.float().requires_grad_() for x in (a, b)]
    y0 = got[0] * 3  # a non-leaf path: its gradient flows on through autograd
    masked_path_sum([y0, None, got[1], got[1]], backend=backend).mul(2).backward(grad.float())
    for r, g in zip(ref, got):
        assert relative_error(g.grad, r.grad) < 1e-6


@pytest.mark.parametrize(
    "call,error,pattern",
    [
        (lambda: masked_path_sum([]), ValueError, "ys is empty"),
        (lambda: masked_path_sum([torch.randn(3)], torch.ones(1), [1, 0]), ValueError, "mask has 2 entries"),
        (lambda: masked_path_sum([torch.randn(3)], torch.ones(1), [2]), ValueError, r"mask\[0\] must be 0 or 1"),
        (lambda: masked_path_sum([torch.randn(3), torch.randn(4)]), ValueError, r"ys\[1\] is .* all active"),
        (lambda: masked_path_sum([torch.randn(3), torch.randn(3, dtype=torch.float16)]), ValueError, r"ys\[1\]"),
        (lambda: masked_path_sum([torch.ones(3, dtype=torch.int64)]), TypeError, r"ys\[0\] must be float32"),
        (lambda: masked_path_sum([torch.randn(3)], torch.ones(2)), ValueError, r"weights must have shape \(1,\)"),
        (lambda: masked_path_sum([torch.randn(3)], torch.ones(1, dtype=torch.int32)), TypeError, "floating-point"),
        (lambda: masked_path_sum([None, torch.randn(3)], torch.ones(2), [1, 1]), TypeError, r"ys\[0\] is active"),
        (lambda: masked_path_sum([None, None]), ValueError, "every path is None"),
        (lambda: masked_path_sum([torch.randn(3)], torch.ones(1, device="meta")), ValueError, "weights are on meta"),
        (lambda: masked_path_sum([torch.randn(3)], None, torch.ones(1, 1)), ValueError, "mask must be 1-D"),
        (lambda: masked_path_sum([torch.randn(3)], backend="fast"), ValueError, "backend must be 'auto'"),
        (lambda: masked_path_sum([torch.randn(3, dtype=torch.float64)], backend="cpp"), TypeError,
         "takes float32, bfloat16 or float16"),
    ],
)
def test_bad_input_gives_one_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_device_mask_is_refused_because_it_would_sync():
    with pytest.raises(ValueError, match="mask must be on the host"):
        masked_path_sum([torch.randn(3, device="cuda")], None, torch.ones(1, device="cuda"))
