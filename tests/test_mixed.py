"""stnas.supernet.mixed: the mixed (DARTS / DrNAS) supernet of a cell space, against plain references.

The references are written here from the definition, not from the module's schedule: a node is the
weighted sum over its incoming edges and ops of each op's standalone module (the cell's own modules,
deep-copied to float64 and called one by one, ``none`` included as ``x * 0``); with partial channels every
edge runs DrNAS's MixedOp (first C/K channels through the ops, concat with the rest, shuffle) on its own.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from stnas.spaces import Space
from stnas.spaces.cell import CellArch
from stnas.supernet.cell_blocks import ReLUConvBN, Zero, edge_key
from stnas.supernet.mixed import MixedCell, MixedCellNet, channel_shuffle

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES, EDGES = 4, 6


def reference_shuffle(x, groups):
    """Channel shuffle by an explicit index: output channel i * groups + g is input g * (C/groups) + i."""
    c = x.shape[1]
    per = c // groups
    index = [g * per + i for i in range(per) for g in range(groups)]
    return x[:, index]


def reference_cell(cell, x, weights, mask):
    """The float64 definition: node d = sum over edges (d, s) of the edge's mixed op on node s."""
    k = cell.k
    nodes = [x]
    for dst in range(1, cell.nodes):
        total = 0
        for src in range(dst):
            e = dst * (dst - 1) // 2 + src
            h = nodes[src]
            part = h.shape[1] // k
            xs = h[:, :part]
            mixed = 0
            for o, name in enumerate(cell.ops):
                if mask[e][o]:
                    mixed = mixed + weights[e, o] * cell.edges[edge_key(dst, src)][name](xs)
            if k > 1:
                mixed = reference_shuffle(torch.cat([mixed + 0 * xs, h[:, part:]], 1), k)
            total = total + mixed
        nodes.append(total)
    return nodes[-1]


def make_cell(channels=8, k=1, mask=None, seed=0, fuse=False):
    torch.manual_seed(seed)
    cell = MixedCell(NODES, OPS, channels, k, fuse_convs=fuse)
    for m in cell.modules():  # non-trivial running statistics, so that eval mode differs from train mode
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    mask = mask or [[True] * len(OPS) for _ in range(EDGES)]
    cell._plan = cell.plan(mask)
    return cell, mask


def random_mask(seed):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(EDGES, len(OPS), generator=g) < 0.6)
    mask[torch.arange(EDGES), torch.randint(0, len(OPS), (EDGES,), generator=g)] = True
    return mask.tolist()


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("weights_kind", ["softmax", "fixed"])
@pytest.mark.parametrize("masked", [False, True])
def test_mixed_cell_equals_float64_weighted_sum_of_standalone_ops(fuse, k, train, weights_kind, masked):
    mask = random_mask(k * 7 + train) if masked else None
    cell, mask = make_cell(channels=8, k=k, mask=mask, seed=k + 10 * train, fuse=fuse)
    ref = copy.deepcopy(cell).double()
    cell.train(train), ref.train(train)
    if weights_kind == "softmax":
        w = torch.randn(EDGES, len(OPS)).masked_fill(~torch.tensor(mask), float("-inf")).softmax(-1)
    else:  # given weights, not normalised, some negative: the sum must take them as they are
        w = torch.randn(EDGES, len(OPS))
    x = torch.randn(5, 8, 7, 9)
    out = cell(x, w)
    expected = reference_cell(ref, x.double(), w.double(), mask)
    assert out.shape == expected.shape == x.shape
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    # Running statistics after one training forward: every BN's own, as if its op ran alone.
    for (name, buf), (ref_name, ref_buf) in zip(cell.named_buffers(), ref.named_buffers()):
        assert name == ref_name
        torch.testing.assert_close(buf.double(), ref_buf.double(), rtol=1e-5, atol=1e-6, msg=name)


def test_running_stats_move_in_training_and_not_in_eval():
    cell, _ = make_cell()
    bn = cell.edges["2<-1"]["nor_conv_3x3"].bn
    before = bn.running_mean.clone()
    cell.eval()(torch.randn(4, 8, 6, 6), torch.full((EDGES, len(OPS)), 0.2))
    assert torch.equal(bn.running_mean, before)
    cell.train()(torch.randn(4, 8, 6, 6), torch.full((EDGES, len(OPS)), 0.2))
    assert not torch.equal(bn.running_mean, before) and bn.num_batches_tracked.item() == 1


def float64_network_reference(net, x, w):
    ref = copy.deepcopy(net).double()
    h = ref.stem(x.double())
    for module in ref.body:
        h = reference_cell(module, h, w.double(), net._mask_host) if isinstance(module, MixedCell) else module(h)
    return ref.head(h)


@pytest.mark.parametrize("weighting", ["softmax", "dirichlet"])
def test_network_equals_float64_reference_with_its_drawn_weights(weighting):
    torch.manual_seed(1)
    net = MixedCellNet("nb201-demo", weighting)
    net.beta.data.normal_()
    net.prune(4)
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(5)
    w = net.sample_weights()
    torch.manual_seed(5)
    out = net(x)  # draws the same w from the same seed
    torch.testing.assert_close(out.double(), float64_network_reference(net, x, w.detach()), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- masked paths are never run

@pytest.mark.parametrize("weighting,fuse", [("softmax", False), ("dirichlet", True)])
def test_pruned_and_none_ops_are_never_called_and_get_no_gradient(weighting, fuse):
    torch.manual_seed(2)
    net = MixedCellNet("nb201-demo", weighting, fuse_convs=fuse)
    net.beta.data.normal_()
    net.prune(2)
    fired = []
    for cell in net.cells():
        for e, (dst, src) in enumerate(cell.edge_list):
            for o, name in enumerate(OPS):
                op = cell.edges[edge_key(dst, src)][name]
                if net._mask_host[e][o] and name != "none":
                    continue
                for m in op.modules():
                    m.register_forward_hook(lambda *a, key=(dst, src, name): fired.append(key))
                    for p in m.parameters(recurse=False):
                        p.data.fill_(float("nan"))
                    for b in m.buffers(recurse=False):
                        if b.is_floating_point():
                            b.fill_(float("nan"))
    x = torch.randn(2, 3, 32, 32)
    for train in (True, False):
        net.train(train)
        out = net(x)
        assert torch.isfinite(out).all() and not fired
    out.sum().backward()
    assert torch.isfinite(net.beta.grad).all()
    assert (net.beta.grad[~net.mask] == 0).all() and (net.beta.grad[net.mask] != 0).any()
    for cell in net.cells():
        for e, (dst, src) in enumerate(cell.edge_list):
            for o, name in enumerate(OPS):
                for p in cell.edges[edge_key(dst, src)][name].parameters():
                    assert (p.grad is not None) == bool(net._mask_host[e][o]), (dst, src, name)


def test_a_poisoned_active_op_does_reach_the_output():
    """The control of the test above: the same poison on a kept op shows."""
    net = MixedCellNet("nb201-demo").eval()
    net.body.stage0_cell0.edges["3<-0"]["nor_conv_3x3"].conv.weight.data.fill_(float("nan"))
    assert not torch.isfinite(net(torch.randn(2, 3, 32, 32))).all()


# ---------------------------------------------------------------------- the Dirichlet draw

def test_dirichlet_rsample_gradient_matches_the_analytic_gradient_of_the_expectation():
    """d/d beta E[f(w)], w ~ Dir(elu(beta) + 1) over the kept ops, for f(w) = sum(a w + b w^2): the mean
    of the pathwise (rsample) gradients against the exact gradient of E[f] = sum(a m1 + b m2) with
    m1 = c / c0, m2 = c (c + 1) / (c0 (c0 + 1)). Tolerance: 5 standard errors from the batches' spread."""
    torch.manual_seed(3)
    net = MixedCellNet("nb201-demo", "dirichlet")
    net.beta.data.normal_(0, 0.7)
    net.prune(4)
    mask = net.mask
    a, b = torch.randn(EDGES, len(OPS)), torch.randn(EDGES, len(OPS))
    batches, per_batch = 20, 150
    grads = []
    for _ in range(batches):
        net.beta.grad = None
        loss = 0
        for _ in range(per_batch):
            w = net.sample_weights()
            assert torch.all(w[~mask] == 0) and torch.allclose(w.sum(1), torch.ones(EDGES))
            loss = loss + (a * w + b * w * w).sum()
        (loss / per_batch).backward()
        grads.append(net.beta.grad.clone())
    grads = torch.stack(grads).double()
    estimate, stderr = grads.mean(0), grads.std(0) / math.sqrt(batches)

    beta = net.beta.detach().double().requires_grad_()
    c = (F.elu(beta) + 1).masked_fill(~mask, 0)
    c0 = c.sum(1, keepdim=True)
    exact = (a.double() * c / c0 + b.double() * c * (c + 1) / (c0 * (c0 + 1))).sum()
    (exact_grad,) = torch.autograd.grad(exact, beta, retain_graph=True)
    assert (estimate[~mask] == 0).all()
    err = (estimate - exact_grad)[mask].abs()
    assert (err <= 5 * stderr[mask] + 1e-4).all(), (err.max(), stderr[mask].max())
    # and it can fail: the gradient of f at the mean weights (no sampling) is a different number
    wrong = torch.autograd.grad((a.double() * c / c0 + b.double() * (c / c0) ** 2).sum(), beta)[0]
    assert ((estimate - wrong)[mask].abs() > 5 * stderr[mask]).any()


def test_dirichlet_draws_differ_per_forward_and_softmax_is_deterministic():
    net = MixedCellNet("nb201-demo", "dirichlet")
    assert not torch.equal(net.sample_weights(), net.sample_weights())
    net = MixedCellNet("nb201-demo", "softmax")
    torch.testing.assert_close(net.sample_weights(), net.arch_weights())


# ---------------------------------------------------------------------- derive and prune

@pytest.mark.parametrize("weighting", ["softmax", "dirichlet"])
def test_derive_is_the_argmax_of_beta_over_kept_ops(weighting):
    space = Space.load("nb201-demo")
    net = MixedCellNet(space, weighting)
    beta = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0],
                         [2.0, 0.5, 0.2, 0.9, 0.0],   # none wins
                         [0.3, 0.3, 0.1, 0.3, 0.0],   # a tie: the lower index
                         [0.0, 0.0, 0.0, 0.0, 0.7],
                         [-1., -2., -3., -4., -5.],
                         [0.1, 0.2, 0.3, 0.4, 0.5]])
    net.beta.data.copy_(beta)
    assert net.derive() == CellArch(("nor_conv_3x3", "none", "none", "avg_pool_3x3", "none", "avg_pool_3x3"))
    # masked ops cannot win, even with the highest beta
    net.mask[:, 4] = False
    net.mask[1, 0] = False
    net._sync_mask()
    arch = net.derive()
    assert space.validate(arch) == arch
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "none", "none", "none", "nor_conv_3x3")


@pytest.mark.parametrize("weighting", ["softmax", "dirichlet"])
def test_prune_keeps_the_top_ops_and_renormalises(weighting):
    net = MixedCellNet("nb201-demo", weighting)
    torch.manual_seed(4)
    beta = torch.randn(EDGES, len(OPS))
    beta[2] = torch.tensor([0.3, 0.3, 0.1, 0.3, 0.0])  # ties: the lower index stays
    net.beta.data.copy_(beta)
    for keep in (3, 2, 1):
        before = net.arch_weights().detach()
        net.prune(keep)
        expected = torch.zeros(EDGES, len(OPS), dtype=torch.bool)
        for e in range(EDGES):
            kept = [o for o in range(len(OPS)) if before[e, o] > 0]
            top = sorted(kept, key=lambda o: (-before[e, o].item(), o))[:keep]
            expected[e, top] = True
        assert torch.equal(net.mask, expected)
        w = net.arch_weights()
        assert (w[~net.mask] == 0).all()
        torch.testing.assert_close(w.sum(1), torch.ones(EDGES))
        torch.testing.assert_close(net.sample_weights().sum(1), torch.ones(EDGES))
    assert net.mask[2].tolist() == [True, False, False, False, False]
    with pytest.raises(ValueError):
        net.prune(2)  # only one op left per edge
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------- the network

@pytest.mark.parametrize("name,weighting", [("nb201-demo", "softmax"), ("nb201-demo", "dirichlet"),
                                            ("nb201", "dirichlet")])
def test_output_shape_and_gradients_reach_beta_and_weights(name, weighting):
    space = Space.load(name)
    net = MixedCellNet(space, weighting)
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    assert out.shape == (2, space.num_classes) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    names = {n for n, _ in net.named_parameters()}
    assert "body.stage0_cell0.edges.2<-1.nor_conv_3x3.conv.weight" in names and "beta" in names
    assert [p for p in net.arch_parameters()] == [net.beta]
    assert len(net.weight_parameters()) == len(names) - 1
    assert all(p is not net.beta for p in net.weight_parameters())
    assert sum(isinstance(m, MixedCell) for m in net.body) == len(space.cells)
    assert all(not m.affine for c in net.cells() for m in c.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_state_dict_round_trip_restores_mask_and_beta():
    torch.manual_seed(6)
    net = MixedCellNet("nb201-demo", "softmax")
    net.beta.data.normal_()
    net.prune(2)
    net(torch.randn(4, 3, 32, 32))  # running statistics move
    state = net.state_dict()
    assert "mask" in state and "beta" in state
    other = MixedCellNet("nb201-demo", "softmax")
    other.load_state_dict(state)
    assert torch.equal(other.mask, net.mask) and torch.equal(other.beta, net.beta)
    assert other._mask_host == net._mask_host and other.derive() == net.derive()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other.eval()(x), net.eval()(x), rtol=0, atol=0)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="weighting"):
        MixedCellNet("nb201-demo", "gumbel")
    with pytest.raises(Exception, match="partial_channels"):
        MixedCellNet("nb201-demo", partial_channels=3)
    with pytest.raises(ValueError, match="widen"):
        MixedCellNet("nb201-demo", partial_channels=2).widen(2)


# ---------------------------------------------------------------------- partial channels

def test_channel_shuffle_is_the_shufflenet_permutation():
    x = torch.randn(2, 12, 3, 3)
    for g in (1, 2, 3, 4):
        assert torch.equal(channel_shuffle(x, g), reference_shuffle(x, g))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("weighting", ["softmax", "dirichlet"])
def test_partial_channels_shape_and_gradients(k, weighting):
    net = MixedCellNet("nb201-demo", weighting, partial_channels=k)
    conv = net.body.stage0_cell0.edges["2<-1"]["nor_conv_3x3"].conv
    assert conv.in_channels == conv.out_channels == 8 // k
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert net.beta.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0


def test_widen_is_net2wider_and_keeps_each_op_on_its_old_channels():
    torch.manual_seed(7)
    net = MixedCellNet("nb201-demo", "dirichlet", partial_channels=4)
    net(torch.randn(4, 3, 32, 32))  # running statistics
    net.prune(3)
    old = copy.deepcopy(net).eval()
    net.widen(2, generator=torch.Generator().manual_seed(0))
    net.eval()
    assert net.partial_channels == 2 and all(c.k == 2 for c in net.cells())
    checked = 0
    for cell, old_cell in zip(net.cells(), old.cells()):
        for key in cell.edges:
            for name in ("nor_conv_1x1", "nor_conv_3x3"):
                op, old_op = cell.edges[key][name], old_cell.edges[key][name]
                in_idx, out_idx = op.widened_index
                c_old, c_new = cell.channels // 4, cell.channels // 2
                assert op.conv.weight.shape[:2] == (c_new, c_new) and op.bn.running_mean.shape == (c_new,)
                w, w_old = op.conv.weight, old_op.conv.weight
                assert torch.equal(w[:c_old, :c_old], w_old) and torch.equal(w[:c_old, c_old:], w_old[:, in_idx])
                assert torch.equal(w[c_old:], w[out_idx])
                assert torch.equal(op.bn.running_var[c_old:], old_op.bn.running_var[out_idx])
                # the function: new inputs zero -> old outputs, then copies of the chosen ones
                x = torch.randn(3, c_old, 5, 5)
                y_old = old_op(x)
                y = op(torch.cat([x, torch.zeros_like(x)], 1))
                torch.testing.assert_close(y, torch.cat([y_old, y_old[:, out_idx]], 1))
                checked += 1
    assert checked == 2 * EDGES * len(net.cells())
    # the widened network computes its definition, trains, and keeps mask and beta
    assert torch.equal(net.mask, old.mask) and torch.equal(net.beta, old.beta)
    net.train()
    xin = torch.randn(2, 3, 32, 32)
    w = net.sample_weights().detach()
    torch.testing.assert_close(net(xin, w).double(), float64_network_reference(net, xin, w), rtol=1e-5, atol=1e-5)
    net(xin).sum().backward()
    cell = net.body.stage0_cell0
    for e, (dst, src) in enumerate(cell.edge_list):
        for o, name in enumerate(OPS):
            if name.startswith("nor_conv"):
                grad = cell.edges[edge_key(dst, src)][name].conv.weight.grad
                assert (grad is not None and grad.shape[:2] == (4, 4)) == net._mask_host[e][o]  # C=8, K=2
    net.widen(1)
    assert net(xin).shape == (2, 10)


def test_every_conv_op_is_a_relu_conv_bn_with_its_own_parameters():
    """The fused schedule relies on it: per-edge Parameters, registered under the standalone names."""
    cell, _ = make_cell()
    convs = [cell.edges[k][n] for k in cell.edges for n in ("nor_conv_1x1", "nor_conv_3x3")]
    assert all(isinstance(m, ReLUConvBN) for m in convs)
    assert len({id(m.conv.weight) for m in convs}) == len(convs)
    assert all(isinstance(cell.edges[k]["none"], Zero) for k in cell.edges)
