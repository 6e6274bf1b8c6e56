"""stnas.ops.sgld_step: every backend against the float64 definition, the noise's statistics, the
determinism of the Philox stream, and the boundary checks."""
import math

import pytest
import torch

from stnas.ops import last_backend, philox_normal, sgld_step, sgld_step_reference
from tests.conftest import device_backend_params, relative_error

BACKENDS = device_backend_params("sgld_step")
SIZES = [1, 7, 1023, 4097]
MIXED_SHAPES = [(7,), (3, 5, 3, 3), (1,), (64, 17), (4097,), (2, 8, 5, 5)]
GRAD_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _make(shapes, device, grad_dtype, channels_last=False):
    params, grads = [], []
    for shape in shapes:
        p = torch.randn(shape, device=device)
        g = torch.randn(shape, device=device).to(grad_dtype)
        if channels_last and len(shape) == 4:
            p = p.contiguous(memory_format=torch.channels_last)
            g = g.contiguous(memory_format=torch.channels_last)
        params.append(p)
        grads.append(g)
    momenta = [torch.randn_like(p) for p in params]
    return params, grads, momenta


def _float64_update(params, grads, momenta, lr, wd, mu, sigma, seed, step, indices):
    """The contract evaluated in float64, elementwise on logical indices (noise mapped from storage
    order through the same flat view every backend walks)."""
    out_p, out_v = [], []
    for i, p in enumerate(params):
        p64 = p.double()
        d = grads[i].double() + wd * p64
        v = mu * momenta[i].double() + d if mu > 0 else d
        new = p64 - lr * v
        if sigma:
            noise = philox_normal(p.numel(), seed, step, indices[i], device=p.device).double()
            flat = torch.empty_like(p, dtype=torch.float64)
            flat.as_strided((p.numel(),), (1,)).copy_(noise)
            new = new + sigma * flat
        out_p.append(new)
        out_v.append(v)
    return out_p, out_v


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("grad_dtype", GRAD_DTYPES, ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_sgld_step_matches_float64_definition(device, backend, grad_dtype, momentum, sigma, seeded):
    shapes = [(n,) for n in SIZES] + MIXED_SHAPES
    params, grads, momenta = _make(shapes, device, grad_dtype, channels_last=True)
    indices = [3 * i + 1 for i in range(len(params))]
    kw = dict(lr=0.1, wd=1e-2, mu=momentum, sigma=sigma, seed=987654321012, step=5, indices=indices)
    want_p, want_v = _float64_update(params, grads, momenta, **kw)
    sgld_step(params, grads, momenta, lr=0.1, weight_decay=1e-2, momentum=momentum, sigma=sigma,
              seed=987654321012, step=5, indices=indices, backend=backend)
    assert last_backend("sgld_step") == backend
    for i, (p, want) in enumerate(zip(params, want_p)):
        # fp32 rounding of a few fused multiply-adds and of logf/cosf in the noise: ~1e-7 relative
        assert relative_error(p, want) < 2e-6, f"param {i} shape {tuple(p.shape)}"
        assert p.stride() == p.stride()
        if momentum > 0:
            assert relative_error(momenta[i], want_v[i]) < 2e-6, f"momentum {i}"


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sgld_step_noise_equals_reference_noise_elementwise(device, backend, seeded):
    """All backends share the Philox layout: the same key gives the same noise, element by element."""
    shapes = [(4097,), (3, 5, 7), (1,), (8, 4, 3, 3)]
    params = [torch.zeros(s, device=device) for s in shapes]
    ref = [torch.zeros(s, device=device) for s in shapes]
    kw = dict(lr=0.0, weight_decay=0.0, momentum=0.0, sigma=1.0, seed=42, step=2**33 + 7, indices=[0, 5, 9, 2**31])
    sgld_step(params, [torch.zeros_like(p) for p in params], backend=backend, **kw)
    sgld_step_reference(ref, [torch.zeros_like(p) for p in ref], [], 0.0, 0.0, 0.0, 1.0, 42, 2**33 + 7,
                        [0, 5, 9, 2**31])
    for p, r in zip(params, ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sgld_noise_has_zero_mean_and_sigma_squared_variance(device, backend):
    n, sigma = 1 << 20, 0.3
    p = torch.zeros(n, device=device)
    sgld_step([p], [torch.zeros_like(p)], lr=0.0, sigma=sigma, seed=7, step=0, backend=backend)
    x = p.double().cpu() / sigma
    # 6-sigma bounds of the sample mean (sd 1/sqrt(n)) and variance (sd sqrt(2/n)): a false alarm
    # has probability ~2e-9 per check, a wrong scale (e.g. sigma^2 or 2*sigma) fails by far.
    assert abs(x.mean().item()) < 6 / math.sqrt(n)
    assert abs(x.var().item() - 1.0) < 6 * math.sqrt(2 / n)
    # Shape of the distribution: the fraction beyond 1 and 2 standard deviations (0.3173, 0.0455).
    for k, tail in ((1.0, 0.31731), (2.0, 0.04550)):
        frac = (x.abs() > k).double().mean().item()
        assert abs(frac - tail) < 6 * math.sqrt(tail * (1 - tail) / n), (k, frac)
    # Neighbours (same Philox block and across blocks) are uncorrelated.
    for lag in (1, 2, 3, 4, 5):
        corr = (x[:-lag] * x[lag:]).mean().item()
        assert abs(corr) < 6 / math.sqrt(n), (lag, corr)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sgld_noise_streams_differ_by_seed_step_and_index(device, backend):
    def noise(seed, step, index):
        p = torch.zeros(1 << 14, device=device)
        sgld_step([p], [torch.zeros_like(p)], lr=0.0, sigma=1.0, seed=seed, step=step, indices=[index],
                  backend=backend)
        return p.cpu()

    base = noise(1, 1, 1)
    torch.testing.assert_close(noise(1, 1, 1), base, rtol=0, atol=0)  # same key, same bits
    for other in (noise(2, 1, 1), noise(1, 2, 1), noise(1, 1, 2)):
        corr = (base * other).mean().item()
        assert abs(corr) < 6 / math.sqrt(base.numel())


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sgld_step_skips_params_without_grad_or_gives_them_noise_only(device, backend, seeded):
    params = [torch.randn(33, device=device), torch.randn(5, 5, device=device)]
    before = [p.clone() for p in params]
    grads = [torch.randn(33, device=device), None]
    sgld_step(params, grads, lr=0.1, sigma=0.0, backend=backend)
    torch.testing.assert_close(params[1], before[1], rtol=0, atol=0)
    torch.testing.assert_close(params[0], before[0] - 0.1 * grads[0], rtol=1e-6, atol=1e-6)
    sgld_step(params, grads, lr=0.1, sigma=0.5, seed=3, step=4, indices=[0, 1], noise_without_grad=True,
              backend=backend)
    noise = philox_normal(25, 3, 4, 1, device=device).view(5, 5)
    torch.testing.assert_close(params[1], before[1] + 0.5 * noise, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sgld_step_accepts_non_contiguous_grads(device, backend, seeded):
    p = torch.randn(6, 10, device=device)
    g = torch.randn(10, 6, device=device).t()  # a transposed view: strides differ from the param's
    want = p - 0.5 * g
    sgld_step([p], [g], lr=0.5, backend=backend)
    torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sgld_step_opcheck(device, backend, seeded):
    params, grads, momenta = _make([(7,), (3, 4, 5)], device, torch.bfloat16)
    args = (params, grads, momenta, 0.1, 1e-3, 0.9, 0.01, 5, 3, [0, 1], backend)
    torch.library.opcheck(torch.ops.stnas.sgld_step.default, args)


def test_sgld_step_empty_list_is_a_no_op():
    sgld_step([], [], lr=0.1)


@pytest.mark.parametrize(
    "mutate,error,pattern",
    [
        (lambda a: a.update(grads=a["grads"][:1]), ValueError, "grads has 1 entries but params has 2"),
        (lambda a: a.update(indices=[0]), ValueError, "indices has 1 entries"),
        (lambda a: a["grads"].__setitem__(1, torch.randn(4)), ValueError, r"grads\[1\] has shape"),
        (lambda a: a["grads"].__setitem__(0, torch.ones(3, dtype=torch.int32)), TypeError, r"grads\[0\] must be float32"),
        (lambda a: a["params"].__setitem__(0, torch.randn(3, dtype=torch.float16)), TypeError, r"params\[0\] must be float32"),
        (lambda a: a["params"].__setitem__(1, torch.randn(10)[::2]), ValueError, r"params\[1\] must be dense"),
        (lambda a: a["grads"].__setitem__(1, torch.randn(5, device="meta")), ValueError, r"grads\[1\] is on meta"),
        (lambda a: a["params"].__setitem__(1, torch.randn(5, device="meta")), ValueError, r"params\[1\] is on meta"),
        (lambda a: a.update(momentum=0.9), ValueError, "momentum > 0 needs momenta"),
        (lambda a: a.update(momentum=0.9, momenta=[torch.zeros(3)]), ValueError, "momenta has 1 entries"),
        (lambda a: a.update(momentum=0.9, momenta=[torch.zeros(3), torch.zeros(5, dtype=torch.float64)]),
         ValueError, r"momenta\[1\] must be a float32 tensor"),
        (lambda a: a.update(lr=-1.0), ValueError, "lr must lie in"),
        (lambda a: a.update(lr=float("nan")), ValueError, "lr must be a finite number"),
        (lambda a: a.update(momentum=1.0), ValueError, "momentum must lie in"),
        (lambda a: a.update(seed=-3), ValueError, "seed must be an int"),
        (lambda a: a.update(step=1.5), ValueError, "step must be an int"),
        (lambda a: a["params"].__setitem__(0, [1.0, 2.0, 3.0]), TypeError, r"params\[0\] is a list"),
        (lambda a: a.update(backend="gpu"), ValueError, "backend must be 'auto' or one of"),
    ],
)
def test_sgld_step_rejects_bad_input_with_a_clear_message(mutate, error, pattern):
    args = dict(params=[torch.randn(3), torch.randn(5)], grads=[torch.randn(3), torch.randn(5)], lr=0.1)
    mutate(args)
    with pytest.raises(error, match=pattern):
        sgld_step(**args)


def test_forcing_a_backend_that_cannot_run_says_why():
    p = torch.randn(4)
    with pytest.raises(RuntimeError, match="the CUDA backend runs on CUDA tensors"):
        sgld_step([p], [torch.randn(4)], lr=0.1, backend="cuda")


def test_environment_variable_forces_the_backend(monkeypatch):
    monkeypatch.setenv("STNAS_BACKEND", "reference")
    sgld_step([torch.randn(4)], [torch.randn(4)], lr=0.1)
    assert last_backend("sgld_step") == "reference"
