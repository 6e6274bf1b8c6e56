"""Microbenchmark of ``stnas.ops.sgld_step`` (fused multi-tensor SGLD with in-register Philox noise)
against PyTorch baselines measured in the same run.

    python bench/bench_sgld.py [--device cpu|cuda] [--numel 10000000] [--tensors 161] [--grad-dtype fp32]
                               [--momentum 0.9] [--threads N] [--warmup W] [--reps R] [--out PATH]

Implementations (each on a fresh copy of the same random state):
  stnas:<backend>  every backend that ``stnas.ops.available_backends('sgld_step', device)`` lists
  eager_foreach    torch.optim.SGD(foreach=True) step + per-param ``p.add_(torch.randn_like(p), alpha=sigma)``
  fused            torch.optim.SGD(fused=True) step + the same separate noise (where fused SGD exists)
  compile          torch.compile of the reference update + torch.randn noise over the whole list
The byte floor per element is read p, g, v + write p, v: (4 + gsize + 4) + (4 + 4) bytes with momentum
(v is absent without it); GB/s = floor / median time, compared with the measured copy bandwidth.
On CUDA each row also has, from torch.profiler over 5 calls, its kernels per call and their busy time:
the floor over that busy time is what the kernels alone reach, without launch costs.
Torch optimizers need grad.dtype == param.dtype: with --grad-dtype bf16/fp16 the baselines cast the grads
into fp32 .grad buffers inside the timed region (the fused op reads the low-precision grads directly).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

try:
    from bench import common
except ImportError:  # run as `python bench/bench_sgld.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

common.ensure_stnas_importable()

import stnas  # noqa: E402
import stnas.ops  # noqa: E402
import stnas.optim  # noqa: E402
from stnas.ops import _backend  # noqa: E402

OP = "sgld_step"
GRAD_DTYPES = common.DTYPES
LR, WEIGHT_DECAY, SIGMA, SEED = 1e-3, 5e-4, 1e-3, 1234


# ----------------------------------------------------------------------------------------------------
# parameter set

def make_shapes(numel: int, tensors: int) -> list[tuple[int, ...]]:
    """A ResNet-like list of ``tensors`` parameter shapes holding ``numel`` elements in total:
    conv weights (1x1 and 3x3, four stages of growing width) each followed by a BatchNorm weight and bias,
    then a classifier weight and bias (the last tensor absorbs the rounding remainder)."""
    if tensors < 1 or numel < tensors:
        raise ValueError(f"need 1 <= tensors <= numel, got tensors={tensors}, numel={numel}")
    n_layers = (tensors - 2) // 3
    if n_layers < 1:
        base, extra = divmod(numel, tensors)
        return [(base + (1 if i < extra else 0),) for i in range(tensors)]
    n_extra = (tensors - 2) - 3 * n_layers  # extra bias vectors to reach the requested count
    stage_widths = (64, 128, 256, 512)
    layers = []  # (c_out, c_in, k) at unit scale
    c_prev = 3
    for i in range(n_layers):
        c = stage_widths[min(3, 4 * i // n_layers)]
        k = 3 if i % 3 == 1 or i == 0 else 1
        layers.append((c, c_prev, k))
        c_prev = c
    conv0 = sum(c * ci * k * k for c, ci, k in layers)
    for shrink in (0.9, 0.7, 0.5, 0.3, 0.1):
        alpha = math.sqrt(shrink * numel / conv0)
        shapes = []
        c_last = 1
        for i, (c, ci, k) in enumerate(layers):
            co = max(1, round(c * alpha))
            cin = 3 if i == 0 else c_last
            shapes += [(co, cin, k, k), (co,), (co,)]
            c_last = co
        shapes += [(64,)] * n_extra
        used = sum(math.prod(s) for s in shapes)
        rest = numel - used
        cls = max(1, rest // (c_last + 1))  # the classifier absorbs the remainder (~10% of the elements)
        if rest >= cls * (c_last + 1):
            fc_w = (cls, c_last)
            bias = rest - cls * c_last  # cls + (rest mod (c_last + 1))
            return shapes + [fc_w, (bias,)]
    base, extra = divmod(numel, tensors)
    return [(base + (1 if i < extra else 0),) for i in range(tensors)]


def make_state(shapes, grad_dtype, momentum, device, seed=0):
    """Fresh random params (fp32), grads (grad_dtype) and momenta (fp32, None when momentum == 0)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    params, grads, momenta = [], [], []
    for s in shapes:
        params.append((torch.randn(s, generator=gen) * 0.05).to(device))
        grads.append((torch.randn(s, generator=gen) * 1e-2).to(device=device, dtype=grad_dtype))
        momenta.append((torch.randn(s, generator=gen) * 1e-3).to(device))
    return params, grads, (momenta if momentum > 0 else None)


def clone_state(state):
    params, grads, momenta = state
    return ([p.clone() for p in params], [g.clone() for g in grads],
            None if momenta is None else [v.clone() for v in momenta])


# ----------------------------------------------------------------------------------------------------
# baselines (importable by the tests)

def make_sgd_optimizer(params, grads, momenta, *, lr, weight_decay, momentum, kind="foreach"):
    """A ``torch.optim.SGD`` over ``params`` whose ``.grad`` are ``grads`` (fp32 copies when the grads are
    low precision; see :func:`refresh_grads`) and whose momentum buffers are ``momenta`` (so that its
    first step already is ``v = mu * v + d``, like ``sgld_step``). ``kind``: 'foreach', 'fused' or 'for'."""
    flags = {"foreach": dict(foreach=True), "fused": dict(fused=True), "for": dict(foreach=False)}[kind]
    for p, g in zip(params, grads):
        p.grad = g if g.dtype == p.dtype else g.to(p.dtype)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **flags)
    if momenta is not None and momentum > 0:
        for p, v in zip(params, momenta):
            opt.state[p]["momentum_buffer"] = v
    return opt


def refresh_grads(params, grads) -> None:
    """Cast low-precision ``grads`` into the params' fp32 ``.grad`` buffers (what a torch optimizer
    needs); a no-op for fp32 grads, which already are the ``.grad``."""
    pairs = [(p.grad, g) for p, g in zip(params, grads) if p.grad is not g]
    if pairs:
        torch._foreach_copy_([a for a, _ in pairs], [b for _, b in pairs])


@torch.no_grad()
def eager_sgld_baseline(optimizer: torch.optim.Optimizer, sigma: float) -> None:
    """One SGLD step the eager PyTorch way: ``optimizer.step()`` (SGD with momentum and weight decay),
    then ``p.add_(torch.randn_like(p), alpha=sigma)`` for every parameter (materialised noise)."""
    optimizer.step()
    if sigma != 0.0:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.add_(torch.randn_like(p), alpha=sigma)


def reference_sgld_update(params, grads, momenta, lr: float, weight_decay: float, momentum: float,
                          sigma: float) -> None:
    """The update of ``sgld_step`` in plain PyTorch with ``torch.randn`` noise (the function that the
    ``compile`` baseline hands to ``torch.compile``)."""
    for i, p in enumerate(params):
        d = grads[i].float() + weight_decay * p
        if momenta is not None:
            v = momenta[i]
            v.mul_(momentum).add_(d)
            d = v
        p.add_(d, alpha=-lr)
        if sigma != 0.0:
            p.add_(torch.randn_like(p), alpha=sigma)


# ----------------------------------------------------------------------------------------------------

def floor_bytes_per_element(grad_dtype: torch.dtype, momentum: float) -> int:
    gsize = torch.empty((), dtype=grad_dtype).element_size()
    reads = 4 + gsize + (4 if momentum > 0 else 0)
    writes = 4 + (4 if momentum > 0 else 0)
    return reads + writes


def _max_err(a_list, b_list) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(a_list, b_list)) if a_list else 0.0


def check_backends(backends, base_state, momentum, device) -> dict[str, dict]:
    """One step of each stnas backend from the same state against the reference backend (noise on)."""
    kw = dict(lr=LR, weight_decay=WEIGHT_DECAY, momentum=momentum, sigma=SIGMA, seed=SEED, step=7)
    out = {}
    try:
        ref = clone_state(base_state)
        stnas.ops.sgld_step(ref[0], ref[1], ref[2], backend="reference", **kw)
    except Exception as exc:  # noqa: BLE001
        return {b: {"check_error": "reference failed: " + common.error_string(exc)} for b in backends}
    for b in backends:
        if b == "reference":
            continue
        try:
            st = clone_state(base_state)
            stnas.ops.sgld_step(st[0], st[1], st[2], backend=b, **kw)
            res = {"max_abs_err_p_vs_reference": _max_err(st[0], ref[0])}
            if momentum > 0:
                res["max_abs_err_v_vs_reference"] = _max_err(st[2], ref[2])
            out[b] = res
            del st
        except Exception as exc:  # noqa: BLE001
            out[b] = {"check_error": common.error_string(exc)}
    del ref
    common.synchronize(device)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--numel", type=int, default=10_000_000, help="total parameter elements")
    parser.add_argument("--tensors", type=int, default=161,
                        help="number of parameter tensors (default 161, as many as ResNet-50)")
    parser.add_argument("--grad-dtype", choices=tuple(GRAD_DTYPES), default="fp32")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--sigma", type=float, default=SIGMA, help="noise std (default 1e-3)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = parser.parse_args(argv)
    device = common.resolve_common_args(args, cpu_reps=10, cuda_reps=200)
    grad_dtype = GRAD_DTYPES[args.grad_dtype]
    sigma, momentum = args.sigma, args.momentum

    env = common.environment(device)
    print(f"# sgld_step benchmark on {env['device_name']} | torch {env['torch']} | triton {env['triton']} | "
          f"threads {torch.get_num_threads()}")
    copy_bw = common.measure_copy_bandwidth(device, args.copy_bytes)
    print(f"measured copy bandwidth: {copy_bw['gbps']:.1f} GB/s (median, {copy_bw['bytes_copied'] >> 20} MiB copy_)")
    backends, missing = common.backend_report(OP, device)

    shapes = make_shapes(args.numel, args.tensors)
    numel = sum(math.prod(s) for s in shapes)
    floor = floor_bytes_per_element(grad_dtype, momentum) * numel
    print(f"{len(shapes)} tensors, {numel:,} elements, grads {args.grad_dtype}, momentum {momentum}, "
          f"sigma {sigma}; byte floor {floor / 1e6:.1f} MB/step")
    base_state = make_state(shapes, grad_dtype, momentum, device)
    indices = list(range(len(shapes)))
    timing = dict(warmup=args.warmup, reps=args.reps, device=device, max_seconds=args.max_seconds)
    rows: list[dict] = []

    def run(impl: str, build, note: str = "") -> None:
        """build() -> (step fn, setup info dict); times the step fn and appends a row."""
        row = {"impl": impl, "note": note}
        t0 = time.perf_counter()
        try:
            fn, info = build()
            row.update(info)
            stats = common.time_fn(fn, **timing)
            row.update(common.timing_fields(stats, floor, copy_bw["gbps"]))
            if device.type == "cuda":  # the kernels alone: how many per call and their share of the floor
                prof = common.profile_calls(fn, 5, device)
                if "gpu_busy_ms_per_call" in prof:
                    row["kernels_per_call"] = prof["kernels_per_call"]
                    row["gpu_busy_ms"] = prof["gpu_busy_ms_per_call"]
                    row["kernel_frac_copy_bw"] = floor / (row["gpu_busy_ms"] * 1e-3) / 1e9 / copy_bw["gbps"]
        except Exception as exc:  # noqa: BLE001 - recorded in the row and printed
            row["error"] = common.error_string(exc)
            print(f"! {impl}: {row['error']}", flush=True)
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        common.synchronize(device)

    for b in backends:
        def build(b=b):
            params, grads, momenta = clone_state(base_state)
            counter = [0]

            def fn():
                counter[0] += 1
                stnas.ops.sgld_step(params, grads, momenta, lr=LR, weight_decay=WEIGHT_DECAY, momentum=momentum,
                                    sigma=sigma, seed=SEED, step=counter[0], indices=indices, backend=b)

            fn()
            ran = stnas.ops.last_backend(OP)
            if ran != b:
                raise RuntimeError(f"asked for backend {b!r} but last_backend('sgld_step') is {ran!r}")
            return fn, {"backend": b}
        run(f"stnas:{b}", build, "Philox noise materialised in PyTorch ops" if b == "reference"
            else "fused, in-register Philox noise")

    # The backend's launcher alone (no Python checks, no dispatch): what the kernel itself reaches.
    for b in backends:
        if b == "reference":
            continue

        def build_raw(b=b):
            params, grads, momenta = clone_state(base_state)
            launch = (_backend.compiled_module()[0].sgld_step_cuda if b == "cuda" else
                      _backend.compiled_module()[0].sgld_step_cpu if b == "cpp" else
                      _backend.triton_module(OP)[0].sgld_step)
            vs = momenta if (momenta is not None and momentum > 0) else []
            counter = [0]

            def fn():
                counter[0] += 1
                launch(params, grads, vs, LR, WEIGHT_DECAY, momentum, sigma, SEED, counter[0], indices)

            return fn, {"backend": b}
        run(f"launcher:{b}", build_raw, "the backend's launcher called directly: kernel time plus launch cost")

    # The optimiser, as a training loop calls it: tensors checked on the first step only (the op rows
    # above pay the full per-tensor boundary checks on every call). PyTorch keeps .grad in the param's
    # dtype, so these rows exist for fp32 grads only.
    for b in backends if grad_dtype == torch.float32 else ():
        if b == "reference":
            continue

        def build_opt(b=b):
            params, grads, momenta = clone_state(base_state)
            for p, g in zip(params, grads):
                p.grad = g
            opt = stnas.optim.SGLD(params, lr=LR, momentum=momentum, weight_decay=WEIGHT_DECAY,
                                   temperature=sigma**2 / (2 * LR), dataset_size=1, seed=SEED, backend=b)
            if momenta is not None and momentum > 0:
                for p, v in zip(params, momenta):
                    opt.state[p]["momentum_buffer"] = v
            opt.step()
            return opt.step, {"backend": b}
        run(f"stnas.optim.SGLD:{b}", build_opt, "the optimiser: boundary checks on its first step only")

    grad_note = "" if grad_dtype == torch.float32 else f"; {args.grad_dtype} grads cast to fp32 .grad in the timed region"
    for impl, kind in (("eager_foreach", "foreach"), ("fused", "fused")):
        def build(kind=kind):
            params, grads, momenta = clone_state(base_state)
            opt = make_sgd_optimizer(params, grads, momenta, lr=LR, weight_decay=WEIGHT_DECAY, momentum=momentum,
                                     kind=kind)

            def fn():
                refresh_grads(params, grads)
                eager_sgld_baseline(opt, sigma)

            return fn, {}
        run(impl, build, f"torch.optim.SGD({kind}=True) + randn_like noise{grad_note}")

    if args.no_compile:
        rows.append({"impl": "compile", "error": "skipped (--no-compile)"})
    else:
        def build():
            params, grads, momenta = clone_state(base_state)
            compiled = torch.compile(reference_sgld_update, dynamic=False)
            t0 = time.perf_counter()
            with torch.no_grad():
                compiled(params, grads, momenta, LR, WEIGHT_DECAY, momentum, sigma)
            common.synchronize(device)
            compile_s = time.perf_counter() - t0

            def fn():
                with torch.no_grad():
                    compiled(params, grads, momenta, LR, WEIGHT_DECAY, momentum, sigma)

            return fn, {"compile_s": compile_s}
        run("compile", build, "torch.compile(update + torch.randn noise)")

    checks = check_backends(backends, base_state, momentum, device)
    for r in rows:
        if r.get("backend") in checks:
            r.update(checks[r["backend"]])
    common.add_ratios(rows, {"eager": "eager_foreach", "fused": "fused"})

    columns = [("impl", "impl", ""), ("median_ms", "median ms", ".3f"), ("min_ms", "min ms", ".3f"),
               ("reps", "reps", ""), ("gbps", "GB/s", ".1f"), ("frac_copy_bw", "of copy bw", ".1%"),
               ("speedup_vs_eager", "x vs eager", ".2f"), ("speedup_vs_fused", "x vs fused", ".2f"),
               ("max_abs_err_p_vs_reference", "err p", ".1e"), ("compile_s", "compile s", ".1f")]
    if device.type == "cuda":
        columns[6:6] = [("kernels_per_call", "kernels", ".0f"), ("gpu_busy_ms", "busy ms", ".3f"),
                        ("kernel_frac_copy_bw", "kernels of bw", ".1%")]
    print()
    common.table(rows, columns)
    payload = {
        "benchmark": "sgld_step",
        "environment": env,
        "config": {"device": str(device), "numel": numel, "tensors": len(shapes), "shapes": shapes,
                   "grad_dtype": args.grad_dtype, "momentum": momentum, "lr": LR, "weight_decay": WEIGHT_DECAY,
                   "sigma": sigma, "seed": SEED, "warmup": args.warmup, "reps": args.reps,
                   "max_seconds": args.max_seconds, "threads": torch.get_num_threads(),
                   "floor_bytes_per_element": floor_bytes_per_element(grad_dtype, momentum),
                   "floor_bytes": floor},
        "copy_bandwidth": copy_bw,
        "backends_available": backends,
        "backends_unavailable": missing,
        "rows": rows,
    }
    out = Path(args.out) if args.out else common.default_out("sgld", device)
    common.write_results(out, payload)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
