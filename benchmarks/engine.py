"""Prefill time and peak memory of LaMPE vs the stock SDPA attention, measured side by side.

    python benchmarks/engine.py                      # CPU: 4-layer d=256 Llama, W=256, L=4096
    python benchmarks/engine.py --device cuda --length 32768 --dtype bfloat16

Each variant runs in its own fresh subprocess (so one's allocations cannot hide the other's),
alternating, ``--repeats`` times; the table shows the median prefill time and the peak memory
of the forward pass: on CUDA ``max_memory_allocated``, on CPU the rise of the process's peak
resident set over its size just before the timed forward (weights and libraries excluded),
with glibc told to return every block over 64 KiB to the system when freed
(``MALLOC_MMAP_THRESHOLD_``), so the peak is live tensors rather than allocator fragmentation.
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

VARIANTS = ("stock", "lampe")


def _model(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.window,
        attn_implementation="sdpa",
    )
    dtype = getattr(torch, args.dtype)
    return LlamaForCausalLM(config).to(args.device, dtype).eval()


def _child(args) -> None:
    import contextlib

    import torch

    from lampe_calib import LampeConfig, apply_lampe

    torch.set_num_threads(args.threads) if args.threads else None
    model = _model(args)
    ids = torch.randint(0, 4096, (1, args.length), device=args.device)
    config = LampeConfig(head=32, tail=16, mapping_length=0.75 * args.window)
    ctx = (lambda: apply_lampe(model, config)) if args.variant == "lampe" else contextlib.nullcontext
    with torch.no_grad(), ctx():
        model(ids[:, :512], use_cache=False)  # warm-up: kernels, allocator
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        start = time.perf_counter()
        model(ids, use_cache=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if args.device == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _child(args)
        return
    runs = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--device",
                args.device,
                "--dtype",
                args.dtype,
                "--length",
                str(args.length),
                "--window",
                str(args.window),
                "--threads",
                str(args.threads),
            ]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        v: (
            min(r["seconds"] for r in rs),
            statistics.median(r["seconds"] for r in rs),
            statistics.median(r["peak_bytes"] for r in rs),
        )
        for v, rs in runs.items()
    }
    print(
        f"4-layer d=256 Llama, W={args.window}, L={args.length}, {args.device} {args.dtype}, "
        f"{args.repeats} runs each"
    )
    print(f"{'variant':8} {'min s':>9} {'median s':>9} {'peak MiB':>9}")
    for v, (lo, med, b) in summary.items():
        print(f"{v:8} {lo:9.3f} {med:9.3f} {b / 2**20:9.1f}")
    (t_lo, t_med, t_mem), (l_lo, l_med, l_mem) = summary["stock"], summary["lampe"]
    print(
        f"ratio    {l_lo / t_lo:9.3f} {l_med / t_med:9.3f} {l_mem / t_mem:9.3f}   "
        "(lampe / stock; goals: time <= 1.25, memory <= 1.15)"
    )


if __name__ == "__main__":
    main()
