"""Microbenchmark of ``stnas.ops.batch_norm_act`` (training-mode BatchNorm + addend + activation with
autograd, running statistics updated) against PyTorch baselines measured in the same run.

    python bench/bench_batch_norm_act.py [--device cpu|cuda] [--dtype bf16] [--shape 256,64,56,56]
        [--variants relu6,none+add,relu+add] [--no-channels-last] [--mode fwd,bwd,fwd+bwd]
        [--no-compile] [--threads N] [--warmup W] [--reps R] [--out PATH]

Implementations, for every variant (activation, with or without an addend):
  stnas:<backend>  every backend ``stnas.ops.available_backends('batch_norm_act', device)`` lists
  eager            ``act(F.batch_norm(x, ...) + addend)`` with autograd (what nn.BatchNorm2d + nn.ReLU6 run)
  compile          torch.compile of that eager function (one compile per variant)
Modes: fwd (the forward, autograd recording on), bwd (``torch.autograd.grad`` of a retained graph to x,
weight, bias and the addend), fwd+bwd (both). Byte floor of the two-pass algorithm every backend runs,
N elements of s bytes (the statistics are needed before the normalisation, so x is read twice, as
grad_y, x (and y for the activation's mask) are by the backward's reduction and then its gradient pass):
  fwd (3 [+1 addend]) N s;  bwd (2 (2 [+1 act]) + 1 [+1 addend]) N s;  fwd+bwd the sum.
The fraction of the floor is that floor over the time, divided by the machine's measured copy bandwidth.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch._functorch.config
import torch.nn.functional as F

try:
    from bench import common
except ImportError:  # run as `python bench/bench_batch_norm_act.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

common.ensure_stnas_importable()

import stnas.ops  # noqa: E402

OP = "batch_norm_act"
DTYPES = common.DTYPES
MODES = ("fwd", "bwd", "fwd+bwd")
_ACTS = {"relu6": F.relu6, "relu": F.relu, "none": lambda t: t}


def parse_variant(text: str) -> tuple[str, bool]:
    act, _, add = text.partition("+")
    if act not in _ACTS or add not in ("", "add"):
        raise SystemExit(f"--variants: {text!r} is not ACT or ACT+add with ACT one of {', '.join(_ACTS)}")
    return act, add == "add"


def eager_batch_norm_act(x, weight, bias, running_mean, running_var, addend, act):
    """The eager PyTorch baseline: what ``nn.BatchNorm2d`` (+ the residual) + the activation run."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, True, 0.1, 1e-5)
    return _ACTS[act](y if addend is None else y + addend)


def floor_bytes(mode: str, n: int, s: int, act: str, add: bool) -> int:
    fwd = (3 + add) * n * s
    bwd = (2 * (2 + (act != "none")) + 1 + add) * n * s
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def make_inputs(shape, dtype, device, channels_last, add, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def rand():
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=fmt)

    c = shape[1]
    x = rand().requires_grad_(True)
    addend = rand().requires_grad_(True) if add else None
    weight = (torch.rand(c, generator=gen) + 0.5).to(device).requires_grad_(True)
    bias = torch.randn(c, generator=gen).to(device).requires_grad_(True)
    stats = (torch.zeros(c, device=device), torch.ones(c, device=device))
    return x, weight, bias, addend, stats, rand()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--shape", default=None, help="N,C,H,W (default: 256,64,56,56 on cuda, 32,64,28,28 on cpu)")
    parser.add_argument("--variants", default="relu6,none+add",
                        help="comma list of ACT or ACT+add, ACT in relu6, relu, none (default: relu6,none+add: "
                             "MBConv's expand/depthwise BN and its projection BN with the residual)")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=True,
                        help="inputs in channels_last (default)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--mode", default="fwd,bwd,fwd+bwd", help="comma list of fwd, bwd, fwd+bwd (default: all)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = parser.parse_args(argv)
    device = common.resolve_common_args(args, cpu_reps=20, cuda_reps=100)
    cuda = device.type == "cuda"
    dtype_name = args.dtype or ("bf16" if cuda else "fp32")
    dtype = DTYPES[dtype_name]
    shape = tuple(common.parse_int_list(args.shape or ("256,64,56,56" if cuda else "32,64,28,28")))
    if len(shape) != 4:
        parser.error("--shape: give N,C,H,W")
    variants = [parse_variant(v.strip()) for v in args.variants.split(",") if v.strip()]
    modes = list(MODES) if args.mode in ("all", "") else [m.strip() for m in args.mode.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser.error(f"--mode: unknown mode {m!r}; choose from {', '.join(MODES)}")
    n = shape[0] * shape[1] * shape[2] * shape[3]
    s = torch.empty((), dtype=dtype).element_size()

    env = common.environment(device)
    print(f"# batch_norm_act benchmark on {env['device_name']} | torch {env['torch']} | triton {env['triton']} | "
          f"threads {torch.get_num_threads()}")
    copy_bw = common.measure_copy_bandwidth(device, args.copy_bytes)
    print(f"measured copy bandwidth: {copy_bw['gbps']:.1f} GB/s (median, {copy_bw['bytes_copied'] >> 20} MiB copy_)")
    backends, missing = common.backend_report(OP, device)
    print(f"shape {shape} {dtype_name} {'channels_last' if args.channels_last else 'contiguous'}, "
          f"variants {args.variants}, modes {modes}; {n * s / 1e6:.1f} MB per tensor")
    timing = dict(warmup=args.warmup, reps=args.reps, device=device, max_seconds=args.max_seconds)

    rows: list[dict] = []
    for seed, (act, add) in enumerate(variants):
        variant = f"{act}{'+add' if add else ''}"
        x, weight, bias, addend, (rm, rv), grad_y = make_inputs(shape, dtype, device, args.channels_last, add, seed)
        inputs = [x, weight, bias] + ([addend] if add else [])

        def eager(act=act):
            return eager_batch_norm_act(x, weight, bias, rm, rv, addend, act)

        impls = [(f"stnas:{b}", lambda b=b, act=act: stnas.ops.batch_norm_act(
            x, weight, bias, rm, rv, addend, momentum=0.1, act=act, backend=b)) for b in backends]
        impls.append(("eager", eager))
        if args.no_compile:
            rows.append({"impl": "compile", "variant": variant, "error": "skipped (--no-compile)"})
        else:
            # The bwd mode calls the backward of one retained graph repeatedly, which a compiled backward
            # with donated buffers refuses: compile without them (every mode then measures the same graph).
            torch._functorch.config.donated_buffer = False
            compiled = torch.compile(eager_batch_norm_act, dynamic=False)
            impls.append(("compile", lambda act=act: compiled(x, weight, bias, rm, rv, addend, act)))
        # float64 yardstick of the forward (the running statistics it updates are a throwaway copy)
        ref = eager_batch_norm_act(*(t.detach().double() if t is not None else None for t in (x, weight, bias)),
                                   rm.double(), rv.double(), None if addend is None else addend.detach().double(), act)
        for impl, fn in impls:
            check = {}
            try:
                t0 = time.perf_counter()
                out = fn()
                torch.autograd.grad(out, inputs, grad_y)
                common.synchronize(device)
                first_s = time.perf_counter() - t0
                check["max_abs_err_fwd"] = float((out.detach().double() - ref).abs().max())
                if impl == "compile":
                    check["compile_s"] = first_s
                if impl.startswith("stnas:"):
                    ran = (stnas.ops.last_backend(OP), stnas.ops.last_backend(OP + "_backward"))
                    want = impl.split(":", 1)[1]
                    if ran != (want, want):
                        raise RuntimeError(f"asked for backend {want!r} but the forward/backward ran {ran}")
            except Exception as exc:  # noqa: BLE001 - recorded in every row of this impl and printed
                err = common.error_string(exc)
                print(f"! {impl} {variant}: {err}", flush=True)
                rows.extend({"impl": impl, "variant": variant, "mode": mode, "error": err} for mode in modes)
                continue
            for mode in modes:
                row = {"impl": impl, "variant": variant, "mode": mode, **check}
                try:
                    if mode == "fwd":
                        step = fn
                    elif mode == "bwd":
                        out = fn()

                        def step(out=out):
                            return torch.autograd.grad(out, inputs, grad_y, retain_graph=True)
                    else:
                        def step(fn=fn):
                            return torch.autograd.grad(fn(), inputs, grad_y)
                    stats = common.time_fn(step, **timing)
                    row.update(common.timing_fields(stats, floor_bytes(mode, n, s, act, add), copy_bw["gbps"]))
                except Exception as exc:  # noqa: BLE001
                    row["error"] = common.error_string(exc)
                    print(f"! {impl} {variant} {mode}: {row['error']}", flush=True)
                finally:
                    out = step = None
                rows.append(row)
                common.synchronize(device)
        del x, weight, bias, addend, grad_y, inputs, impls
        if cuda:
            torch.cuda.empty_cache()
        print(f"{variant} done", flush=True)

    common.add_ratios(rows, {"eager": "eager", "compile": "compile"}, group_keys=("variant", "mode"))
    rows.sort(key=lambda r: (MODES.index(r["mode"]) if r.get("mode") in MODES else -1, r.get("variant", "")))
    columns = [("mode", "mode", ""), ("variant", "variant", ""), ("impl", "impl", ""),
               ("median_ms", "median ms", ".3f"), ("min_ms", "min ms", ".3f"), ("reps", "reps", ""),
               ("gbps", "GB/s", ".1f"), ("frac_copy_bw", "of copy bw", ".1%"),
               ("speedup_vs_eager", "x vs eager", ".2f"), ("speedup_vs_compile", "x vs compile", ".2f"),
               ("max_abs_err_fwd", "err fwd", ".1e")]
    print()
    common.table(rows, columns, id_keys=("variant", "mode"))
    payload = {
        "benchmark": OP,
        "environment": env,
        "config": {"device": str(device), "shape": shape, "numel": n, "dtype": dtype_name, "element_size": s,
                   "channels_last": args.channels_last, "variants": args.variants, "modes": modes,
                   "params_dtype": "fp32", "warmup": args.warmup, "reps": args.reps,
                   "max_seconds": args.max_seconds, "threads": torch.get_num_threads()},
        "copy_bandwidth": copy_bw,
        "backends_available": backends,
        "backends_unavailable": missing,
        "rows": rows,
    }
    out = Path(args.out) if args.out else common.default_out(OP, device)
    common.write_results(out, payload)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
