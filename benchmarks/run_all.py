"""Run every benchmark; write results.json and results.md; print the table with PASS/MISS.

    python benchmarks/run_all.py                 # everything (about 10 min on 2 CPU cores)
    python benchmarks/run_all.py --quick         # smoke run: small sizes, few repeats
    python benchmarks/run_all.py --only sweep    # one section (repeat --only for more)
    python benchmarks/run_all.py --data routerbench   # 384-d embeddings instead of synthetic

Sections: train (throughput and MFU vs task batch size), sweep (vmapped vs sequential),
adapt (latency, users/s), route (queries/s from embeddings and from text); the environment,
the machine's measured matmul peak and the peak memory are always recorded. Training data
is `synthetic_data(seed=0)` (4000 queries, 64-d) unless --data says otherwise. Outputs go
to benchmarks/results.{json,md} (--quick: results_quick.*; or --out PREFIX).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_adapt  # noqa: E402
import bench_route  # noqa: E402
import bench_sweep  # noqa: E402
import bench_train  # noqa: E402
from common import device_peak_mb, env_info, load_bench_data, matmul_peak, peak_rss_mb  # noqa: E402

SECTIONS = ("train", "sweep", "adapt", "route")
# (dotted key, comparison, threshold, label)
TARGETS = (
    ("train.mfu", ">=", 0.5, "meta-training MFU at default sizes"),
    ("sweep.mfu_small", ">=", 0.55, "sweep of 16 small configs: MFU"),
    ("sweep.speedup_small", ">=", 2.0, "sweep of 16: speed-up over the user loop (compile included)"),
    ("adapt.batch_1024_ms", "<", 25.0, "adapt 1,024 users x 16 contexts (ms)"),
    ("adapt.single_p50_ms", "<", 1.0, "one user adapt + route, p50 (ms)"),
    ("route.qps_embeddings", ">", 100_000, "routing from embeddings (queries/s)"),
)


def settings(quick: bool) -> dict:
    """Keyword arguments of each section's run()."""
    if quick:
        return {"train": dict(batch_sizes=(32,), chunk_steps=10, repeats=2, widths=(64, 128)),
                "sweep": dict(sizes=(4,), config=bench_sweep.SMALL.replace(num_steps=20, chunk_steps=10), repeats=1),
                "adapt": dict(calls=50, repeats=5),
                "route": dict(n_queries=10_000, text_queries=64, repeats=2, text_repeats=1)}
    # Sweeps: 3 repeats (each vmapped run of 16 takes 20-60 s on 2 CPU cores); single-user
    # latencies over 1,000 calls, so that the p99 is not the second-largest of a few.
    return {"train": {}, "sweep": dict(repeats=3), "adapt": dict(calls=1000), "route": {}}


def lookup(results: dict, dotted: str):
    value = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_targets(results: dict) -> list[dict]:
    rows = []
    for key, op, threshold, label in TARGETS:
        value = lookup(results, key)
        ok = None if value is None else (value >= threshold if op == ">=" else
                                         value > threshold if op == ">" else value < threshold)
        rows.append({"key": key, "label": label, "value": value, "target": f"{op} {threshold:g}",
                     "status": "n/a" if ok is None else "PASS" if ok else "MISS"})
    return rows


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _cpu(env: dict) -> str:
    """', <model>, <vector extensions>' for the header (nothing for results written before
    env['cpu'] was recorded)."""
    cpu = env.get("cpu") or {}
    parts = [cpu.get("model") or "", " ".join(cpu.get("flags") or [])]
    return "".join(f", {p}" for p in parts if p)


def markdown(results: dict) -> str:
    env = results["env"]
    quick = "QUICK smoke run (small sizes, few repeats): not for comparison. " if results["settings"]["quick"] else ""
    lines = ["# metarouter_jax benchmarks", "",
             f"{quick}"
             f"JAX {env['jax']} on {env['backend']} ({env['device_count']} x {env['device_kind']}), "
             f"{env['cpu_count']} CPUs (affinity {env['cpu_affinity']}{_cpu(env)}), load average at start "
             f"{_fmt(env['load_average_at_start'])}; {env['time']}.",
             f"Data: {results['settings']['data_note']}. Matmul peak (float32 "
             f"{results['peak']['n']}^3, median): {results['peak']['flops_per_s'] / 1e9:.1f} GFLOP/s.",
             "Every figure: median of repeated runs after a warm-up; compile time separate.", "",
             "## Targets", "", "| metric | value | target | status |", "|---|---|---|---|"]
    lines += [f"| {r['label']} (`{r['key']}`) | {_fmt(r['value'])} | {r['target']} | {r['status']} |"
              for r in results["targets"]]
    train = results.get("train", {})
    if "by_batch_size" in train:
        lines += ["", f"## Meta-training (chunks of {train['chunk_steps']} steps; sizes {train['config']})", ""]
        lines += _table(["tasks/step", "compile s", "steps/s", "tasks/s", "MFLOP/step (XLA)",
                         "MFLOP/step (matmuls by hand)", "GFLOP/s", "MFU"],
                        [[r["tasks_per_step"], f"{r['compile_s']:.1f}", f"{r['steps_per_s']:.1f}",
                          f"{r['tasks_per_s']:,.0f}", _fmt((r["step_flops"] or 0) / 1e6),
                          _fmt(r["step_flops_by_hand"] / 1e6), _fmt((r["flops_per_s"] or 0) / 1e9), _fmt(r["mfu"])]
                         for r in train["by_batch_size"]])
    if "by_width" in train:
        lines += ["", f"Where the MFU saturates: the step at T = {train['tasks_per_step']} and wider hidden layers, "
                  "against a plain two-layer MLP step (SGD, one `lax.scan`) on as many rows as the policy's "
                  "largest matmuls:", ""]
        lines += _table(["hidden", "step MFU", "plain MLP rows", "plain MLP GFLOP/s", "plain MLP MFU"],
                        [[r["hidden"], _fmt(r["step_mfu"]), f"{r['rows']:,}", _fmt(r["flops_per_s"] / 1e9),
                          _fmt(r["mfu"])] for r in train["by_width"]])
    sweep = results.get("sweep", {})
    if "by_size" in sweep:
        lines += ["", f"## Sweeps (small config {sweep['config']}; one run alone: {sweep['single_run_s']:.2f} s, "
                  f"MFU {_fmt(sweep['mfu_single'])})", "",
                  "Speed-up: over the user's loop (`make_train` + `run_training` per configuration, each "
                  "compiled once); cached: the same loop with the persistent compilation cache (the first "
                  "configuration compiles, the others load); shared compile: over one compiled program called "
                  "once per configuration.", ""]
        lines += _table(["configs", "vmapped compile s", "vmapped run s", "user loop s", "speed-up",
                         "cached loop s", "speed-up (cached)",
                         "shared-compile loop: compile s, run s", "speed-up (shared compile)", "speed-up w/o compile",
                         "MFU"],
                        [[r["configs"], f"{r['vmapped_compile_s']:.1f}", f"{r['vmapped_run_s']:.2f}",
                          f"{r['user_loop_s']:.1f}", f"{r['speedup']:.2f}",
                          f"{r['cached_loop_s']:.1f}", f"{r['speedup_cached_loop']:.2f}",
                          f"{r['sequential_compile_s']:.1f}, {r['sequential_run_s']:.2f}",
                          f"{r['speedup_shared_compile']:.2f}", f"{r['speedup_without_compile']:.2f}", _fmt(r["mfu"])]
                         for r in sweep["by_size"]])
    adapt = results.get("adapt", {})
    if "by_inner_steps" in adapt:
        lines += ["", f"## Adaptation ({adapt['users']} users x {adapt['contexts']} contexts; "
                  f"single user over {adapt['calls']} calls)", ""]
        lines += _table(["inner steps", "batch ms", "users/s", "single adapt+route p50 ms", "p99 ms"],
                        [[r["inner_steps"], f"{r['batch_ms']:.2f}", f"{r['users_per_s']:,.0f}",
                          f"{r['single_p50_ms']:.3f}", f"{r['single_p99_ms']:.3f}"] for r in adapt["by_inner_steps"]])
        if "api" in adapt:
            api = adapt["api"]
            lines += ["", f"Through the public API (`MetaRouter.adapt` then `MetaRouter.route` of one host query, "
                      f"inner steps {api['inner_steps']}): p50 {api['p50_ms']:.3f} ms, p99 {api['p99_ms']:.3f} ms."]
    route = results.get("route", {})
    if "embeddings" in route:
        text = route["text"]
        lines += ["", "## Routing", "", "| from | queries/s | compile s | note |", "|---|---|---|---|",
                  f"| embeddings | {_fmt(route['qps_embeddings'])} | {route['embeddings']['compile_s']:.2f} | "
                  f"{route['embeddings']['n_queries']:,} queries, one latent |",
                  f"| raw text | {_fmt(text['qps'])} | {_fmt(text.get('compile_s'))} | "
                  f"{text.get('error') or str(text.get('n_queries')) + ' queries (' + str(text.get('source')) + ')'} |"]
    memory = results["memory"]
    after = ", ".join(f"{k[6:-3]} {_fmt(v)} MB" for k, v in memory.items() if k.startswith("after_"))
    device = (f" Peak memory in use on the device (its allocator's count): {_fmt(memory['device_peak_mb'])} MB."
              if "device_peak_mb" in memory else "")
    lines += ["", "## Memory", "", f"Peak RSS of the training process (this benchmark process, after the training "
              f"and sweep sections): {_fmt(memory.get('peak_rss_mb'))} MB; after each section: {after}. Compiling "
              f"the large programs accounts for about half of it (benchmarks/README.md).{device}"]
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "traceback" in v}
    if errors:
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="NAME",
                        help=f"run only this section ({', '.join(SECTIONS)}); repeatable")
    parser.add_argument("--data", default="synthetic", help="synthetic (default, 64-d) or a dataset, e.g. routerbench")
    parser.add_argument("--out", default=None, help="output prefix (default benchmarks/results[_quick])")
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    out = Path(args.out) if args.out else HERE / ("results_quick" if args.quick else "results")

    start = time.time()
    data = load_bench_data(args.data)
    note = ("synthetic_data(seed=0)" if args.data == "synthetic" else args.data) + \
        f": {data.num_queries} queries, {data.embed_dim}-d embeddings, {data.num_models} models"
    results = {"env": env_info(), "settings": {"quick": args.quick, "data": args.data, "data_note": note,
                                               "sections": sections}}
    print(f"[bench] {note}; devices {results['env']['devices']}", flush=True)
    results["peak"] = matmul_peak()
    peak = results["peak"]["flops_per_s"]
    print(f"[bench] matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)
    kwargs = settings(args.quick)
    runners = {"train": lambda: bench_train.run(data, peak=peak, **kwargs["train"]),
               "sweep": lambda: bench_sweep.run(data, peak=peak, **kwargs["sweep"]),
               "adapt": lambda: bench_adapt.run(data, **kwargs["adapt"]),
               "route": lambda: bench_route.run(data, **kwargs["route"])}
    results["memory"] = {}
    for name in SECTIONS:
        if name not in sections:
            continue
        t0 = time.time()
        print(f"[bench] {name} ...", flush=True)
        try:
            results[name] = runners[name]()
        except Exception as err:  # noqa: BLE001 - record and go on with the other sections
            traceback.print_exc()
            results[name] = {"error": repr(err), "traceback": traceback.format_exc()}
        results[name]["section_s"] = time.time() - t0
        print(f"[bench] {name} done in {time.time() - t0:.0f} s", flush=True)
        results["memory"][f"after_{name}_mb"] = peak_rss_mb()
        if name == "sweep" or (name == "train" and "sweep" not in sections):
            results["memory"]["peak_rss_mb"] = peak_rss_mb()          # the training process's peak (host)
            device_peak = device_peak_mb()                             # an accelerator's own memory
            if device_peak is not None:
                results["memory"]["device_peak_mb"] = device_peak
    results["memory"]["final_peak_rss_mb"] = peak_rss_mb()
    results["targets"] = check_targets(results)
    results["settings"]["total_s"] = time.time() - start

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float))
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"[bench] wrote {out.with_suffix('.json')} and {out.with_suffix('.md')} in {time.time() - start:.0f} s")
    return 1 if any("traceback" in v for v in results.values() if isinstance(v, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
