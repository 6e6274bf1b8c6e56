"""stnas.optim.SGLD: temperature 0 is torch.optim.SGD step for step; the noise has the std the formula
gives; state_dict round trips resume the same noise stream; seeds replay runs."""
import copy
import math

import pytest
import torch

from stnas.optim import SGLD
from tests.conftest import device_backend_params

BACKENDS = device_backend_params("sgld_step")


def _model(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5))
    return model.to(device)


def _train(model, opt, steps, device, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen).to(device)
        y = torch.randint(0, 5, (4,), generator=gen).to(device)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 1e-2)])
def test_zero_temperature_is_torch_sgd_step_for_step(device, backend, momentum, weight_decay):
    ours, theirs = _model(device), _model(device)
    opt = SGLD(ours.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay, temperature=0.0,
               backend=backend)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(5):
        for model, optimizer, gen in ((ours, opt, gen_a), (theirs, ref, gen_b)):
            x = torch.randn(4, 3, 8, 8, generator=gen).to(device)
            y = torch.randint(0, 5, (4,), generator=gen).to(device)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"step {step}: {name}")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_noise_std_is_sqrt_2_lr_t_over_n(device, backend):
    lr, temperature, n = 0.01, 2.0, 50
    p = torch.nn.Parameter(torch.zeros(1 << 18, device=device))
    opt = SGLD([p], lr=lr, temperature=temperature, dataset_size=n, seed=11, backend=backend)
    p.grad = torch.zeros_like(p)
    opt.step()
    sigma = math.sqrt(2 * lr * temperature / n)
    got = p.detach().double().std().item()
    assert abs(got / sigma - 1) < 6 * math.sqrt(0.5 / p.numel())


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_state_dict_round_trip_resumes_the_same_run(device, backend):
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, temperature=1.0, dataset_size=1000, seed=5,
              backend=backend)
    straight = _model(device)
    opt = SGLD(straight.parameters(), **kw)
    _train(straight, opt, 3, device, seed=1)
    saved_model, saved_opt = copy.deepcopy(straight.state_dict()), copy.deepcopy(opt.state_dict())
    _train(straight, opt, 2, device, seed=2)

    resumed = _model(device)
    resumed.load_state_dict(saved_model)
    opt2 = SGLD(resumed.parameters(), **kw)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["step"] == 3
    _train(resumed, opt2, 2, device, seed=2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_same_seed_replays_and_another_seed_differs(device, backend):
    def run(seed):
        model = _model(device)
        _train(model, SGLD(model.parameters(), lr=0.05, temperature=1.0, dataset_size=10, seed=seed,
                           backend=backend), 2, device)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, c = run(1), run(1), run(2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_param_groups_keep_their_own_hyperparameters():
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = SGLD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}], lr=0.5)
    a.grad, b.grad = torch.ones(4), torch.ones(4)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((4,), 0.9))
    torch.testing.assert_close(b.detach(), torch.zeros(4))


@pytest.mark.parametrize(
    "kwargs,pattern",
    [(dict(lr=-1.0), "lr must be"), (dict(lr=0.1, temperature=-1.0), "temperature must be"),
     (dict(lr=0.1, dataset_size=0), "dataset_size must be"), (dict(lr=0.1, momentum=1.5), "momentum must lie"),
     (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be"), (dict(lr=0.1, seed=-1), "seed must be")],
)
def test_bad_hyperparameters_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SGLD([torch.nn.Parameter(torch.ones(2))], **kwargs)
