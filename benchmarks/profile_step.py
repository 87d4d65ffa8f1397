"""Where a meta-step's time goes: HLO composition of the compiled step and timed ablations.

    python benchmarks/profile_step.py [--tasks 32] [--chunk-steps 20] [--prng unsafe_rbg]
        [--only baseline,none,...] [--ops-only] [--sweep 16] [--trace DIR]

1. The compiled meta-step at default sizes: XLA's FLOPs and bytes, the matmuls (shapes and
   their share of the FLOPs), and what the remaining instructions are (random-bit
   generation, gathers, elementwise, copies).
2. Milliseconds of pieces of the step jitted alone (sampling the users' contexts, the
   encoder's forward and backward pass, the whole step).
3. The chunk time of the default step against variants that each remove one piece (the
   encoder and context sampling, the noise, the joint known-profile pass, most of the
   validation), or with another PRNG: the drop in time is what that piece costs.
4. Thread time of the compiled step by kind of instruction (library matmuls, XLA's own dots,
   random-number generation, sort, copies, the rest), from a jax.profiler trace: XLA's CPU
   runtime records one event per executed HLO instruction, named as in the compiled HLO.
   --ops-only runs this part alone. --sweep S does it instead for the sweep benchmark's step
   (S small configurations vmapped) and for one run with as many tasks per step.
5. --trace DIR: a jax.profiler trace of a few chunks (open with TensorBoard / xprof).

Data: synthetic_data(seed=0).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import jax

from common import compile_timed, load_bench_data, median_time
from metarouter_jax import adaptation
from metarouter_jax.config import Hparams, TrainConfig
from metarouter_jax.training import make_train

# Each variant: TrainConfig changes, and what removing it isolates.
VARIANTS = {
    "baseline": ({}, "the default step"),
    "no_joint_known": ({"joint_known": False}, "without the joint known-profile policy pass"),
    "no_noise": ({"label_flips": False, "outcome_noise": False, "random_counts": False, "latent_noise": False},
                 "without the four noise injections"),
    "none": ({"latent_source": "none"}, "no encoder, no contexts sampled (policy only)"),
    "tiny_validation": ({"valid_users": 8}, "validation on 8 users instead of 128"),
}


def hlo_composition(compiled) -> dict:
    """Counts of the optimised HLO's instructions by opcode, and its matmuls (shapes, FLOPs)."""
    ops, dots, shapes = collections.Counter(), [], {}
    for line in compiled.as_text().splitlines():
        line = line.strip()
        if line.endswith("{") and "(" in line:          # a computation's header: its parameters
            shapes = {name: dims for name, dims in re.findall(r"(\S+): f32\[([\d,]*)\]", line)}
            continue
        match = re.match(r"(?:ROOT )?%(\S+) = (?:f32\[([\d,]*)\]\S*|\S+) ([a-z][a-z0-9-]*)\((.*)", line)
        if not match:
            continue
        name, dims, opcode, rest = match.groups()
        ops[opcode] += 1
        if dims is not None:
            shapes[name] = dims
        if opcode == "dot":
            operands = re.findall(r"%(\S+?)[,)]", rest)
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
            lhs = [int(x) for x in shapes.get(operands[0], "").split(",") if x] if operands else []
            out = [int(x) for x in (dims or "").split(",") if x]
            k = 1
            for dim in (contracting.group(1).split(",") if contracting and contracting.group(1) else []):
                k *= lhs[int(dim)] if int(dim) < len(lhs) else 1
            size = 1
            for d in out:
                size *= d
            dots.append({"lhs": lhs, "out": out, "flops": 2 * size * k})
    return {"instructions": sum(ops.values()), "fusions": ops["fusion"], "dots": len(dots),
            "dot_flops": sum(d["flops"] for d in dots), "gathers": ops["gather"], "scatters": ops["scatter"],
            "threefry_bit_ops": sum(ops[o] for o in ("xor", "shift-right-logical", "shift-left", "or")),
            "top_ops": ops.most_common(12), "largest_dots": sorted(dots, key=lambda d: -d["flops"])[:6]}


# op_name fragments of jax.random's functions: the instructions XLA compiled from them.
RANDOM_OPS = ("threefry", "_uniform", "_normal", "_randint", "_bernoulli", "_gumbel", "random_bits")


def op_kind(name: str, opcode: str, op_name: str) -> str:
    """The kind of one executed HLO instruction, for `op_profile`."""
    if any(tag in op_name for tag in RANDOM_OPS):
        return "random-number generation (threefry loops, bits to floats)"
    if name.startswith("ynn_fusion"):
        return "matmuls in YNNPACK fusions"
    if opcode == "dot":
        return "matmuls as XLA dots (mostly weight gradients)"
    if opcode == "sort":
        return "sort (top-k)"
    if opcode in ("copy", "transpose") or name.startswith(("copy", "transpose")):
        return "copies and transposes"
    if opcode == "while":
        return "other loops (here: searchsorted)"
    if "gather" in name or "scatter" in name:
        return "gathers"
    return "elementwise and reductions"


def op_profile(compiled, operands, calls: int = 20) -> dict:
    """Thread milliseconds per call of a compiled program by instruction kind (`op_kind`).

    From a jax.profiler trace of `calls` calls: XLA's CPU runtime records an event per executed
    instruction, named as in the optimised HLO; an instruction's time includes what runs inside
    it (a loop's body), and events on every thread are summed, so the total exceeds wall time
    where instructions run side by side. Empty if the runtime records no instruction events."""
    info = {}
    for line in compiled.as_text().splitlines():
        match = re.match(r"\s*(?:ROOT )?%(\S+) = .*? ([a-z][a-z0-9-]*)\(", line)
        if match:
            op_name = re.search(r'op_name="([^"]*)"', line)
            info[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
    jax.block_until_ready(compiled(*operands))
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(compiled(*operands))
        files = glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(files[0]))["traceEvents"] if files else []
    by_thread = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and event["name"].removeprefix("end: ") in info:
            by_thread[event["tid"]].append(event)
    kinds, count = collections.Counter(), collections.Counter()
    for thread in by_thread.values():           # outermost events only: a loop includes its body
        thread.sort(key=lambda e: (e["ts"], -e["dur"]))
        end = -1.0
        for event in thread:
            if event["ts"] >= end:
                name = event["name"].removeprefix("end: ")
                kind = op_kind(name, *info[name])
                kinds[kind] += event["dur"] / 1e3 / calls
                count[kind] += 1 / calls
                end = event["ts"] + event["dur"]
    return {"threads": len(by_thread), "ms": dict(kinds.most_common()),
            "instructions": {k: round(v) for k, v in count.items()}}


def step_report(step, operands, label: str) -> None:
    """Print a jitted step's compile time, XLA's counts, its matmuls and its thread time by
    instruction kind (`op_profile`) against its wall time."""
    compiled, compile_s, flops = compile_timed(step, *operands)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    comp = hlo_composition(compiled)
    print(f"{label}: compile {compile_s:.1f} s; XLA {flops / 1e6:.0f} MFLOP, "
          f"{cost.get('bytes accessed', 0) / 1e6:.0f} MB accessed, {cost.get('transcendentals', 0) / 1e6:.2f} M "
          f"transcendentals; matmuls {comp['dot_flops'] / 1e6:.0f} MFLOP in {comp['dots']} dots "
          f"({comp['dot_flops'] / flops:.0%} of XLA's count)")
    print(f"  {comp['instructions']} instructions, {comp['fusions']} fusions, {comp['gathers']} gathers, "
          f"{comp['scatters']} scatters, {comp['threefry_bit_ops']} xor/shift/or (threefry)")
    print(f"  most frequent: {comp['top_ops']}")
    print(f"  largest matmuls: {[(d['lhs'], d['out'], d['flops']) for d in comp['largest_dots']]}")

    ops = op_profile(compiled, operands)
    total = sum(ops["ms"].values())
    if not total:
        print("  no per-instruction events in the trace: this JAX/XLA runtime does not record them")
    wall = 1e3 * median_time(compiled, *operands, repeats=20)[0]
    print(f"  thread time by instruction kind: {total:.2f} ms per step on {ops['threads']} threads "
          f"(wall {wall:.2f} ms; {flops / wall / 1e6:.1f} GFLOP/s)")
    for kind, ms in ops["ms"].items():
        print(f"  {ms:7.2f} ms {ms / total:6.1%} {ops['instructions'][kind]:6d} instructions  {kind}")


def sweep_step_profile(data, size: int) -> None:
    """`step_report` for the sweep benchmark's meta-step: `size` configurations of its small
    config (bench_sweep.SMALL, T = 8) vmapped as `run_sweep` vmaps them, beside one run of as
    many tasks per step (T = 8 x size), to tell what vmapping configurations costs."""
    from bench_sweep import SMALL, configurations

    trainer = make_train(SMALL, data)
    keys, hparams = configurations(size)
    states = jax.vmap(trainer.jit_init)(keys, hparams)
    step = jax.jit(jax.vmap(lambda a, s, h: trainer.bind(a).meta_step(s, h), in_axes=(None, 0, 0)))
    step_report(step, (trainer.data_args(), states, hparams),
                f"sweep meta-step, {size} configurations x {SMALL.tasks_per_step} tasks")
    one = make_train(SMALL.replace(tasks_per_step=size * SMALL.tasks_per_step), data)
    single = jax.tree.map(lambda x: x[0], hparams)
    step = jax.jit(lambda a, s, h: one.bind(a).meta_step(s, h))
    step_report(step, (one.data_args(), one.jit_init(keys[0], single), single),
                f"one run's meta-step, {size * SMALL.tasks_per_step} tasks")


def breakdown(trainer, hparams, repeats: int) -> dict:
    """Milliseconds of the pieces of one meta-step's work for T users, each jitted alone."""
    keys = jax.random.split(jax.random.key(2), trainer.config.tasks_per_step)
    args = trainer.data_args()

    def contexts_of(args_, keys_):
        bound = trainer.bind(args_)
        def one(key):
            return bound.user_contexts(key, bound.sample_user(key, hparams, 0.0), bound.train_source)
        return jax.vmap(one)(keys_)

    contexts = jax.jit(contexts_of)(args, keys)
    state = trainer.jit_init(jax.random.key(0), hparams)

    def encoder_grad(params, contexts_, descriptors):
        def total(p):
            means, _ = jax.vmap(adaptation.encode, in_axes=(None, None, 0, None))(trainer.graphdef, p, contexts_,
                                                                                 descriptors)
            return means.sum()
        return jax.grad(total)(params)

    def step(args_, state_):
        return trainer.bind(args_).meta_step(state_, hparams)

    pieces = {"sample one context set per user": (jax.jit(contexts_of), (args, keys)),
              "encoder forward + backward": (jax.jit(encoder_grad), (state.params, contexts, args[0].descriptors)),
              "whole meta-step": (jax.jit(step), (args, state))}
    out = {}
    for name, (fn, operands) in pieces.items():
        compiled, _, _ = compile_timed(fn, *operands)
        out[name] = 1e3 * median_time(compiled, *operands, repeats=max(repeats, 5))[0]
    return out


def chunk_args(trainer, hparams):
    """(data_args, initial state, hparams, fixed validation set): the operands of `jit_chunk`."""
    args = trainer.data_args()
    return (args, trainer.jit_init(jax.random.key(0), hparams), hparams,
            trainer.jit_validation_users(args, jax.random.key(1), hparams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--chunk-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prng", default=None, help="also time the baseline with this jax_default_prng_impl "
                                                     "(unsafe_rbg was 3x slower on CPU)")
    parser.add_argument("--only", default=None, help="comma-separated variants")
    parser.add_argument("--ops-only", action="store_true", help="only the step's thread time by instruction kind")
    parser.add_argument("--sweep", type=int, default=0, metavar="S",
                        help="only the thread time of the sweep benchmark's step: S vmapped small configurations "
                             "against one run of S x 8 tasks")
    parser.add_argument("--trace", default=None, help="write a jax.profiler trace of the baseline here")
    args = parser.parse_args()
    data = load_bench_data()
    hparams = Hparams.create()
    base = TrainConfig(tasks_per_step=args.tasks, chunk_steps=args.chunk_steps, num_steps=20 * args.chunk_steps)

    if args.sweep:
        sweep_step_profile(data, args.sweep)
        return
    trainer = make_train(base, data)
    state = trainer.jit_init(jax.random.key(0), hparams)
    step = jax.jit(lambda a, s, h: trainer.bind(a).meta_step(s, h))
    step_report(step, (trainer.data_args(), state, hparams), f"meta-step, {args.tasks} tasks")
    if args.ops_only:
        return

    for name, ms in breakdown(trainer, hparams, args.repeats).items():
        print(f"  {name:>32}: {ms:7.2f} ms", flush=True)

    names = args.only.split(",") if args.only else list(VARIANTS)
    timings = {}
    for name in names:
        changes, what = VARIANTS[name]
        trainer = make_train(base.replace(**changes), data)
        operands = chunk_args(trainer, hparams)
        chunk, compile_s, _ = compile_timed(trainer.jit_chunk, *operands)
        seconds, _ = median_time(chunk, *operands, repeats=args.repeats)
        timings[name] = seconds
        print(f"{name:>16}: chunk {1e3 * seconds:7.1f} ms ({1e3 * seconds / args.chunk_steps:5.2f} ms/step incl. "
              f"validation), compile {compile_s:.0f} s   [{what}]", flush=True)
    if args.prng:
        jax.config.update("jax_default_prng_impl", args.prng)
        trainer = make_train(base, data)
        operands = chunk_args(trainer, hparams)
        chunk, compile_s, _ = compile_timed(trainer.jit_chunk, *operands)
        seconds, _ = median_time(chunk, *operands, repeats=args.repeats)
        print(f"{'prng ' + args.prng:>16}: chunk {1e3 * seconds:7.1f} ms, compile {compile_s:.0f} s", flush=True)
    if args.trace:
        trainer = make_train(base, data)
        operands = chunk_args(trainer, hparams)
        trainer.jit_chunk(*operands)
        with jax.profiler.trace(args.trace):
            for _ in range(3):
                jax.block_until_ready(trainer.jit_chunk(*operands))
        print(f"trace written to {args.trace}")


if __name__ == "__main__":
    main()
