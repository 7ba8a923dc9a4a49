"""Prefill time of a model loaded in float32 and in bfloat16 on CPU, side by side.

    python benchmarks/dtype.py --model smollm2-135m --length 2048 --threads 2

transformers warns, when a GGUF checkpoint is loaded in bfloat16, that packed weights are
fastest in float32; ``load_model`` dequantizes the GGUF into plain tensors, so what counts is
this measurement. Both models are loaded once, then timed alternately (``--repeats`` rounds;
other load on the machine only adds time, so the minimum is shown with the median).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lampe_calib.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = (torch.float32, torch.bfloat16)
    models = {dtype: load_model(args.model, dtype=dtype)[0] for dtype in dtypes}
    ids = torch.randint(
        0, models[dtypes[0]].config.vocab_size, (1, args.length), generator=torch.Generator().manual_seed(0)
    )
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in dtypes}
    with torch.no_grad():
        for _ in range(args.repeats):
            for dtype, model in models.items():
                started = time.perf_counter()
                model(ids, logits_to_keep=1)
                times[dtype].append(time.perf_counter() - started)
    print(f"{args.model}, L = {args.length}, {torch.get_num_threads()} threads, {args.repeats} rounds")
    for dtype, seconds in times.items():
        name = str(dtype).removeprefix("torch.")
        print(f"  {name:9s} min {min(seconds):7.2f} s   median {statistics.median(seconds):7.2f} s")
    ratio = min(times[torch.float32]) / min(times[torch.bfloat16])
    print(f"  float32 / bfloat16 (min): {ratio:.2f}")


if __name__ == "__main__":
    main()
