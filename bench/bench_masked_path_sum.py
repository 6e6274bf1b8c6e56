"""Microbenchmark of ``stnas.ops.masked_path_sum`` (``out = sum_k mask_k * w_k * y_k`` with autograd)
against PyTorch baselines measured in the same run.

    python bench/bench_masked_path_sum.py [--device cpu|cuda] [--dtype bf16] [--shape 256,64,56,56]
        [--paths 2,3,4,6] [--no-channels-last] [--mode fwd,bwd,fwd+bwd] [--no-weights-grad]
        [--threads N] [--warmup W] [--reps R] [--out PATH]

Implementations, for every K in --paths (all K paths active, inputs and weights requiring grad):
  stnas:<backend>  every backend that ``stnas.ops.available_backends('masked_path_sum', device)`` lists
  eager            ``sum(w[k] * y[k] for k)`` with autograd (:func:`eager_masked_path_sum`)
  compile          torch.compile of that eager function (one compile per K)
Modes: fwd (the forward, autograd recording on), bwd (``torch.autograd.grad`` of a retained graph),
fwd+bwd (both). Byte floor with N elements of s bytes per path:
  fwd (K + 1) N s;  bwd (1 + K) N s reads (grad_out + the K inputs for the weight gradient; grad_out only
  with --no-weights-grad) + K N s writes;  fwd+bwd the sum.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

try:
    from bench import common
except ImportError:  # run as `python bench/bench_masked_path_sum.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

common.ensure_stnas_importable()

import stnas  # noqa: E402
import stnas.ops  # noqa: E402

OP = "masked_path_sum"
DTYPES = common.DTYPES
MODES = ("fwd", "bwd", "fwd+bwd")


def eager_masked_path_sum(ys, weights, mask=None):
    """The eager PyTorch baseline: ``sum(w[k] * y[k] for active k)``, differentiable by autograd."""
    active = [k for k in range(len(ys)) if mask is None or mask[k]]
    out = weights[active[0]] * ys[active[0]]
    for k in active[1:]:
        out = out + weights[k] * ys[k]
    return out


def floor_bytes(mode: str, k: int, n: int, s: int, weights_grad: bool) -> int:
    fwd = (k + 1) * n * s
    bwd = ((1 + k) if weights_grad else 1) * n * s + k * n * s
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def make_inputs(shape, k, dtype, device, channels_last, weights_grad, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fmt = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format

    def rand():
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=fmt)

    ys = [rand().requires_grad_(True) for _ in range(k)]
    weights = torch.softmax(torch.randn(k, generator=gen), 0).to(device).requires_grad_(weights_grad)
    grad_out = rand()
    return ys, weights, grad_out


def _grads(out, ys, weights, grad_out, retain):
    inputs = ys + [weights] if weights.requires_grad else ys
    return torch.autograd.grad(out, inputs, grad_out, retain_graph=retain)


def _check(fn, ys, weights, grad_out) -> dict:
    """Errors of fn's forward and gradients against a float64 evaluation of the definition."""
    ys64 = [y.detach().double() for y in ys]
    w64 = weights.detach().double()
    ref = sum(w64[k] * ys64[k] for k in range(len(ys)))
    g64 = grad_out.double()
    out = fn(ys, weights)
    grads = _grads(out, ys, weights, grad_out, retain=False)
    res = {"max_abs_err_fwd": float((out.detach().double() - ref).abs().max()),
           "max_abs_err_grad_y": max(float((g.double() - w64[k] * g64).abs().max())
                                     for k, g in enumerate(grads[:len(ys)]))}
    if weights.requires_grad:
        gw_ref = torch.stack([(g64 * y).sum() for y in ys64])
        res["max_rel_err_grad_w"] = float(((grads[-1].double() - gw_ref).abs() / gw_ref.abs().clamp_min(1e-12)).max())
    return res


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--shape", default=None, help="N,C,H,W (default: 256,64,56,56 on cuda, 32,64,28,28 on cpu)")
    parser.add_argument("--paths", default="2,3,4,6", help="list of K (number of paths, all active)")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=True,
                        help="paths in channels_last (default)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--mode", default="fwd,bwd,fwd+bwd",
                        help="comma list of fwd, bwd, fwd+bwd (default: all); 'all' also works")
    parser.add_argument("--weights-grad", dest="weights_grad", action="store_true", default=True,
                        help="weights require grad (default)")
    parser.add_argument("--no-weights-grad", dest="weights_grad", action="store_false")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = parser.parse_args(argv)
    device = common.resolve_common_args(args, cpu_reps=20, cuda_reps=100)
    cuda = device.type == "cuda"
    dtype_name = args.dtype or ("bf16" if cuda else "fp32")
    dtype = DTYPES[dtype_name]
    shape = tuple(common.parse_int_list(args.shape or ("256,64,56,56" if cuda else "32,64,28,28")))
    paths = common.parse_int_list(args.paths)
    modes = list(MODES) if args.mode in ("all", "") else [m.strip() for m in args.mode.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser.error(f"--mode: unknown mode {m!r}; choose from {', '.join(MODES)}")
    n = 1
    for d in shape:
        n *= d
    s = torch.empty((), dtype=dtype).element_size()

    env = common.environment(device)
    print(f"# masked_path_sum benchmark on {env['device_name']} | torch {env['torch']} | triton {env['triton']} | "
          f"threads {torch.get_num_threads()}")
    copy_bw = common.measure_copy_bandwidth(device, args.copy_bytes)
    print(f"measured copy bandwidth: {copy_bw['gbps']:.1f} GB/s (median, {copy_bw['bytes_copied'] >> 20} MiB copy_)")
    backends, missing = common.backend_report(OP, device)
    print(f"shape {shape} {dtype_name} {'channels_last' if args.channels_last else 'contiguous'}, paths {paths}, "
          f"modes {modes}, weights grad {args.weights_grad}; {n * s / 1e6:.1f} MB per path")
    timing = dict(warmup=args.warmup, reps=args.reps, device=device, max_seconds=args.max_seconds)

    impls: list[tuple[str, object]] = []
    for b in backends:
        impls.append((f"stnas:{b}", lambda ys, w, b=b: stnas.ops.masked_path_sum(ys, w, backend=b)))
    impls.append(("eager", eager_masked_path_sum))
    rows: list[dict] = []
    for seed, k in enumerate(paths):
        ys, weights, grad_out = make_inputs(shape, k, dtype, device, args.channels_last, args.weights_grad, seed)
        k_impls = list(impls)
        compile_s = None
        if args.no_compile:
            rows.append({"impl": "compile", "K": k, "error": "skipped (--no-compile)"})
        else:
            # one compiled function per K, so that its compile time is measured and its guards are stable
            compiled = torch.compile(eager_masked_path_sum, dynamic=False)
            k_impls.append(("compile", compiled))
        for impl, fn in k_impls:
            check = {}
            try:
                if impl == "compile":
                    t0 = time.perf_counter()
                    _grads(fn(ys, weights), ys, weights, grad_out, retain=False)
                    common.synchronize(device)
                    compile_s = time.perf_counter() - t0
                check = _check(fn, ys, weights, grad_out)
                if impl.startswith("stnas:"):
                    ran = (stnas.ops.last_backend("masked_path_sum"), stnas.ops.last_backend("masked_path_sum_backward"))
                    want = impl.split(":", 1)[1]
                    if ran != (want, want):
                        raise RuntimeError(f"asked for backend {want!r} but the forward/backward ran {ran}")
            except Exception as exc:  # noqa: BLE001 - recorded in every row of this impl and printed
                err = common.error_string(exc)
                print(f"! {impl} K={k}: {err}", flush=True)
                for mode in modes:
                    rows.append({"impl": impl, "K": k, "mode": mode, "error": err})
                continue
            for mode in modes:
                row = {"impl": impl, "K": k, "mode": mode, **check}
                if impl == "compile":
                    row["compile_s"] = compile_s
                try:
                    if mode == "fwd":
                        def step(fn=fn):
                            return fn(ys, weights)
                    elif mode == "bwd":
                        out = fn(ys, weights)

                        def step(out=out):
                            return _grads(out, ys, weights, grad_out, retain=True)
                    else:
                        def step(fn=fn):
                            return _grads(fn(ys, weights), ys, weights, grad_out, retain=False)
                    stats = common.time_fn(step, **timing)
                    row.update(common.timing_fields(stats, floor_bytes(mode, k, n, s, args.weights_grad),
                                                    copy_bw["gbps"]))
                except Exception as exc:  # noqa: BLE001
                    row["error"] = common.error_string(exc)
                    print(f"! {impl} K={k} {mode}: {row['error']}", flush=True)
                finally:
                    out = step = None
                rows.append(row)
                common.synchronize(device)
        del ys, weights, grad_out
        if cuda:
            torch.cuda.empty_cache()
        print(f"K={k} done", flush=True)

    common.add_ratios(rows, {"eager": "eager", "compile": "compile"}, group_keys=("K", "mode"))
    rows.sort(key=lambda r: (MODES.index(r["mode"]) if r.get("mode") in MODES else -1, r.get("K", 0)))
    columns = [("mode", "mode", ""), ("K", "K", ""), ("impl", "impl", ""), ("median_ms", "median ms", ".3f"),
               ("min_ms", "min ms", ".3f"), ("reps", "reps", ""), ("gbps", "GB/s", ".1f"),
               ("frac_copy_bw", "of copy bw", ".1%"), ("speedup_vs_eager", "x vs eager", ".2f"),
               ("speedup_vs_compile", "x vs compile", ".2f"), ("max_abs_err_fwd", "err fwd", ".1e")]
    print()
    common.table(rows, columns)
    payload = {
        "benchmark": "masked_path_sum",
        "environment": env,
        "config": {"device": str(device), "shape": shape, "numel_per_path": n, "dtype": dtype_name,
                   "element_size": s, "channels_last": args.channels_last, "paths": paths, "modes": modes,
                   "weights_grad": args.weights_grad, "weights_dtype": "fp32", "warmup": args.warmup,
                   "reps": args.reps, "max_seconds": args.max_seconds, "threads": torch.get_num_threads()},
        "copy_bandwidth": copy_bw,
        "backends_available": backends,
        "backends_unavailable": missing,
        "rows": rows,
    }
    out = Path(args.out) if args.out else common.default_out("masked_path_sum", device)
    common.write_results(out, payload)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
