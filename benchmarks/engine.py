"""Prefill (and cached decode) time and peak memory of each position scheme vs stock SDPA,
measured side by side.

    python benchmarks/engine.py --threads 2                          # toy: d=256, W=256, L=4096
    python benchmarks/engine.py --case real --threads 2              # SmolLM2-135M's attention
    python benchmarks/engine.py --case real --threads 2 --decode 16  # prefill + 16 cached steps
    python benchmarks/engine.py --device cuda --dtype bfloat16 --case real --length 32768

Cases (both 4-layer Llamas with random weights):

- ``toy``: d = 256, 4 heads, W = 256, s1 = 32, s2 = 16, m = 3/4·W, L = 4096 (full logits);
- ``real``: SmolLM2-135M's attention and MLP (hidden 576, 9 heads on 3 KV heads, head_dim 64,
  intermediate 1536, vocab 49152, θ = 1e5), W = 8192, s1 = W/8, s2 = W/16 (lampe-calibrate's
  defaults), m = 3/4·W, L = 12288; only the last position's logits (``logits_to_keep=1``), as
  calibration computes its loss over hidden-state chunks, never an L × vocab tensor.

Variants: ``stock`` (SDPA), ``lampe`` (fixed m) and every distance or chunk baseline of the method
registry (``selfextend``, ``dca``, ``string``, ``rerope``), each at its recommended settings
for (W, L). With ``--decode N`` each run is ``generate()`` of N new tokens after the L-token
prompt (l = L + N); the table then shows the whole call and the mean decode step (timed from
a logits processor, which ``generate`` calls once per new token).

Each variant runs in its own fresh subprocess (so one's allocations cannot hide another's),
alternating, ``--repeats`` times; peak memory is on CUDA ``max_memory_allocated``, on CPU the
rise of the process's peak resident set over its size just before the timed call (weights and
libraries excluded), with glibc told to return every block over 64 KiB to the system when
freed (``MALLOC_MMAP_THRESHOLD_``), so the peak is live tensors rather than fragmentation.
Times are the minimum and the median over repeats (other load on the machine only adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("stock", "lampe", "selfextend", "dca", "string", "rerope")
CASES = {
    # name: model shape, window, default length, LaMPE head and tail, full logits
    "toy": dict(
        hidden=256, heads=4, kv_heads=4, head_dim=64, intermediate=1024, vocab=4096, theta=1e4,
        window=256, length=4096, head=32, tail=16, full_logits=True,
    ),
    "real": dict(
        hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152, theta=1e5,
        window=8192, length=12288, head=8192 // 8, tail=8192 // 16, full_logits=False,
    ),
}  # fmt: skip


def _model(case: dict, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=case["vocab"],
        hidden_size=case["hidden"],
        intermediate_size=case["intermediate"],
        num_hidden_layers=4,
        num_attention_heads=case["heads"],
        num_key_value_heads=case["kv_heads"],
        head_dim=case["head_dim"],
        max_position_embeddings=case["window"],
        rope_parameters={"rope_type": "default", "rope_theta": case["theta"]},
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).to(args.device, getattr(torch, args.dtype)).eval()


def _context(variant: str, model, case: dict, length: int):
    import contextlib

    from lampe_calib import LampeConfig, apply_lampe
    from lampe_calib.methods._registry import METHODS

    if variant == "stock":
        return contextlib.nullcontext()
    if variant == "lampe":
        config = LampeConfig(head=case["head"], tail=case["tail"], mapping_length=0.75 * case["window"])
        return apply_lampe(model, config)
    return METHODS[variant](model, case["window"], length, None)


def _child(args) -> None:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    if args.threads:
        torch.set_num_threads(args.threads)
    case = CASES[args.case]
    length = args.length or case["length"]
    model = _model(case, args)
    vocab = case["vocab"]
    ids = torch.randint(0, vocab, (1, length), device=args.device)
    keep = {} if case["full_logits"] else {"logits_to_keep": 1}
    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if args.device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return scores

    with torch.no_grad(), _context(args.variant, model, case, length + args.decode):
        model(ids[:, :512], use_cache=False, **keep)  # warm-up: kernels, allocator
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        start = time.perf_counter()
        if args.decode:
            model.generate(
                ids,
                # Passed, or generate() takes the pad id inside the random prompt for padding.
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.decode,
                min_new_tokens=args.decode,
                do_sample=False,
                pad_token_id=0,
                logits_processor=LogitsProcessorList([Stamp()]),
            )
        else:
            model(ids, use_cache=False, **keep)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if args.device == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "step_seconds": step}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _variants(names: str) -> list[str]:
    from lampe_calib.methods._registry import METHODS

    chosen = [v.strip() for v in names.split(",") if v.strip()]
    for v in chosen:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    # Baselines this checkout's registry does not have yet are left out.
    return [v for v in chosen if v in ("stock", "lampe") or v in METHODS]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=list(CASES), default="toy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--length", type=int, default=0, help="input length L (0: the case's)")
    parser.add_argument("--decode", type=int, default=0, help="new tokens to generate after the prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, stock first")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _child(args)
        return
    variants = _variants(args.variants)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant in variants:
            cmd = [sys.executable, __file__, "--variant", variant, "--case", args.case]
            for flag in ("device", "dtype", "length", "decode", "threads"):
                cmd += [f"--{flag}", str(getattr(args, flag))]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    case = CASES[args.case]
    what = f"prefill + {args.decode} cached steps" if args.decode else "prefill"
    print(
        f"{args.case}: 4-layer Llama, hidden {case['hidden']}, {case['heads']}/{case['kv_heads']} heads, "
        f"W={case['window']}, L={args.length or case['length']}, s1={case['head']}, s2={case['tail']}, "
        f"{args.device} {args.dtype}, threads {args.threads or 'default'}; {what}, {args.repeats} runs each"
    )
    header = f"{'variant':11} {'min s':>8} {'median s':>9} {'peak MiB':>9}"
    header += f" {'ratio min':>10} {'ratio med':>10} {'mem ratio':>10}"
    if args.decode:
        header += f" {'step ms':>8} {'step ratio':>11}"
    print(header)
    ref = runs[variants[0]]
    ref_min = min(r["seconds"] for r in ref)
    ref_med = statistics.median(r["seconds"] for r in ref)
    ref_mem = statistics.median(r["peak_bytes"] for r in ref)
    ref_step = min(r["step_seconds"] for r in ref)
    for v, rs in runs.items():
        lo = min(r["seconds"] for r in rs)
        med = statistics.median(r["seconds"] for r in rs)
        mem = statistics.median(r["peak_bytes"] for r in rs)
        line = (
            f"{v:11} {lo:8.3f} {med:9.3f} {mem / 2**20:9.1f} {lo / ref_min:10.3f} {med / ref_med:10.3f} "
            f"{mem / ref_mem:10.3f}"
        )
        if args.decode:
            step = min(r["step_seconds"] for r in rs)
            line += f" {step * 1e3:8.1f} {step / ref_step:11.3f}"
        print(line)
    print(f"(ratios: variant / {variants[0]}; times min and median over runs, memory median, steps min)")


if __name__ == "__main__":
    main()
