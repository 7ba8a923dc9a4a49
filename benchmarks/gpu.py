"""The GPU check: exactness on the device, then prefill, one decode step and peak memory of every
position scheme against the stock model, in one command.

    python benchmarks/gpu.py --out runs/gpu                       # one GPU, under 8 minutes
    python benchmarks/gpu.py --device cpu --tiny --out /tmp/gpu   # the same code, tiny, on CPU

Model: the attention shape of Llama-3-8B (4 layers, hidden 4096, 32 heads on 8 KV heads, head
size 128, MLP 14336, vocab 128256, θ = 5e5), random weights, bfloat16. ``--tiny``: 2 layers,
hidden 64, 4 heads on 2 KV heads, head size 16.

1. Exactness: the bf16 model under each scheme (fused engine on the session's kernels) against
   the fp32 model under the same scheme on the engine's dense path (every region's logits per
   tile, one softmax; itself tested against a plain O(L²) reference on CPU), at 4K tokens
   (``--tiny``: 128) with W = 1024 (32), so every scheme remaps: the max |Δ logit| of a prefill,
   and of 4 greedy cached decode steps against a prefill of the decoded sequence. The stock row
   is the bf16 stock model against the fp32 one (the floor bf16 sets).
2. Speed: W = 8192 (``--tiny``: 64), each scheme at its recommended settings for (W, L), at
   L = 32K, 64K and 128K (4·W, 8·W, 16·W): prefill seconds (last position's logits only, as
   calibration computes its loss over hidden-state chunks), one cached decode step after an
   L-token prefill, and peak memory of the prefill (``max_memory_allocated`` over what was
   allocated before; not measured on CPU). One warm-up prefill at each length first, so
   compilation (FlexAttention) is not timed; the decode step is the faster of the 2nd and 3rd.

Writes ``OUT/gpu.json`` and ``OUT/gpu.md`` after every measurement (atomically), so a run cut
short keeps what it measured; past ``--budget`` seconds the remaining runs are skipped and
listed. Stock is flash-attn (``flash_attention_2``) when installed, else SDPA; each scheme row
names the kernels its session chose (``LampeSession.kernels``).

Runs on torch 2.11 with CUDA 13 and Triton, with or without flash-attn (install the project with
``pip install --no-deps -e .`` over the machine's CUDA torch); only APIs present in 2.11 are used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import transformers

SHAPES = {
    # layers, model shape, window of the speed runs, window and length of the exactness check
    "llama3-8b": dict(
        layers=4, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336, vocab=128256,
        theta=5e5, init=0.02, window=8192, check_window=1024, check_length=4096,
    ),
    "tiny": dict(
        layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=256,
        theta=1e4, init=0.1, window=64, check_window=32, check_length=128,
    ),
}  # fmt: skip
# Speed runs at these multiples of W (Llama-3-8B: 32K, 64K, 128K).
LENGTH_MULTIPLES = (4, 8, 16)
VARIANTS = ("stock", "lampe", "selfextend", "dca", "string", "rerope")
CHECK_VARIANTS = ("stock", "lampe", "lampe-floor", "selfextend", "dca", "string", "rerope")
DECODE_CHECK_STEPS = 4
# The goals (GPU, bf16): ratios to stock in one run, and the logit error.
GOALS = {"prefill_ratio": 1.10, "decode_ratio": 1.3, "memory_ratio": 1.10, "logit_error": 2e-2}


def _cache_keyword() -> str:
    """The forward's KV-cache keyword: ``cache`` from transformers 5.24 on, ``past_key_values`` before."""
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def _model(shape: dict, device: str, dtype: torch.dtype, attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        head_dim=shape["head_dim"],
        max_position_embeddings=shape["window"],
        rope_parameters={"rope_type": "default", "rope_theta": shape["theta"]},
        initializer_range=shape["init"],
        attn_implementation=attn,
    )
    with torch.device(device):  # initialised on the device (8B-sized layers are slow on CPU)
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def _scheme(variant: str, model, window: int, length: int):
    """The context of ``variant`` set up for (W, L); yields the session (None for stock)."""
    from lampe_calib import LampeConfig, apply_lampe
    from lampe_calib.methods._registry import METHODS

    if variant == "stock":
        return contextlib.nullcontext()
    if variant in ("lampe", "lampe-floor"):
        mode = "floor" if variant == "lampe-floor" else "exact"
        config = LampeConfig(head=window // 8, tail=window // 16, mapping_length=0.75 * window, mode=mode)
        return apply_lampe(model, config)
    return METHODS[variant](model, window, length, None)


@contextlib.contextmanager
def _dense_path():
    """Every layer on the engine's dense path (the reference of the fused one)."""
    from lampe_calib.engine import _hook

    with mock.patch.object(_hook, "fused_attention", lambda *args: None):
        yield


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _greedy(model, ids: torch.Tensor, new: int, session) -> tuple[torch.Tensor, torch.Tensor]:
    """``new`` greedy tokens with the KV cache, l = prompt + new as ``generate()`` plans it:
    the sequence ``(1, prompt + new)`` and the step logits ``(1, new, V)`` in float32."""
    from transformers import DynamicCache

    cache = {_cache_keyword(): DynamicCache(config=model.config)}
    if session is not None:
        session.planned_length = ids.shape[1] + new
    logits, tokens, step = [], [], ids
    for _ in range(new):
        last = model(step, **cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
        logits.append(last.float())
        step = last.argmax(-1)
        tokens.append(step)
    if session is not None:
        session.planned_length = None
    return torch.cat([ids, *tokens], 1), torch.cat(logits, 1)


def check_exactness(shape: dict, device: str, stock_attn: str) -> list[dict]:
    """Max |Δ logit| of the bf16 fused engine against the fp32 dense path, per scheme."""
    W, L = shape["check_window"], shape["check_length"]
    reference = _model(shape, device, torch.float32, "eager")
    model = _model(shape, device, torch.bfloat16, stock_attn)
    ids = torch.randint(0, shape["vocab"], (1, L), generator=torch.Generator().manual_seed(1)).to(device)
    prompt = ids[:, : L - DECODE_CHECK_STEPS]
    rows = []
    with torch.no_grad():
        with _dense_path():
            stock = reference(ids, use_cache=False).logits
        for variant in CHECK_VARIANTS:
            with _scheme(variant, model, W, L) as session:
                got = model(ids, use_cache=False).logits.float()
                sequence, steps = _greedy(model, prompt, DECODE_CHECK_STEPS, session)
                kernels = session.kernels.name if session is not None else model.config._attn_implementation
            with _scheme(variant, reference, W, L), _dense_path():
                want = reference(ids, use_cache=False).logits
                want_steps = reference(sequence, use_cache=False).logits[:, prompt.shape[1] - 1 : -1]
            rows.append(
                {
                    "variant": variant,
                    "kernels": kernels,
                    "prefill_error": (got - want).abs().max().item(),
                    "decode_error": (steps - want_steps).abs().max().item(),
                    "max_abs_logit": want.abs().max().item(),
                    # How far the scheme moves the logits from stock: the check is not vacuous.
                    "scheme_vs_stock": (want - stock).abs().max().item(),
                }
            )
            del got, want, steps, want_steps
    del reference, model
    return rows


def _time_prefill(model, ids: torch.Tensor, device: str) -> tuple[float, int | None]:
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    model(ids, use_cache=False, logits_to_keep=1)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else None
    return seconds, peak


def _time_decode(model, ids: torch.Tensor, device: str, session) -> float:
    """One cached decode step after an L-token prefill: the faster of steps 2 and 3."""
    from transformers import DynamicCache

    cache = {_cache_keyword(): DynamicCache(config=model.config)}
    if session is not None:
        session.planned_length = ids.shape[1] + 3
    step = model(ids, **cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
    times = []
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        step = model(step, **cache, use_cache=True).logits[:, -1:].argmax(-1)
        _sync(device)
        times.append(time.perf_counter() - start)
    if session is not None:
        session.planned_length = None
    del cache
    return min(times[1:])


def _ratios(runs: list[dict]) -> None:
    """Each run's ratios to the stock run of its length."""
    stock = {r["length"]: r for r in runs if r["variant"] == "stock" and "prefill_s" in r}
    for r in runs:
        s = stock.get(r["length"])
        if s is None or "prefill_s" not in r:
            continue
        r["prefill_ratio"] = r["prefill_s"] / s["prefill_s"]
        r["decode_ratio"] = r["decode_step_s"] / s["decode_step_s"]
        if r["peak_bytes"] is not None and s["peak_bytes"]:
            r["memory_ratio"] = r["peak_bytes"] / s["peak_bytes"]


def _markdown(report: dict) -> str:
    lines = [
        f"GPU check: {report['device_name']}, torch {report['torch']}, flash-attn "
        f"{'installed' if report['flash_attn'] else 'absent'}; shape {report['shape']}, bf16.",
        "",
        f"Exactness at {report['check']['length']} tokens (W = {report['check']['window']}), bf16 fused "
        "engine vs fp32 dense path, max |Δ logit|:",
        "",
        "| scheme | kernels | prefill | 4 decode steps | max |logit| | scheme vs stock |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["check"]["rows"]:
        lines.append(
            f"| {r['variant']} | {r['kernels']} | {r['prefill_error']:.2e} | {r['decode_error']:.2e} | "
            f"{r['max_abs_logit']:.2f} | {r['scheme_vs_stock']:.2e} |"
        )
    lines += [
        "",
        f"Speed, W = {report['window']} (ratios to stock at the same length):",
        "",
        "| L | scheme | kernels | prefill s | ratio | decode step ms | ratio | peak GiB | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        if "prefill_s" not in r:
            lines.append(f"| {r['length']} | {r['variant']} | {r.get('skipped', '')} | | | | | | |")
            continue
        peak = "—" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
        ratio = {
            k: f"{r[k]:.2f}" if k in r else "—" for k in ("prefill_ratio", "decode_ratio", "memory_ratio")
        }
        lines.append(
            f"| {r['length']} | {r['variant']} | {r['kernels']} | {r['prefill_s']:.3f} | "
            f"{ratio['prefill_ratio']} | {r['decode_step_s'] * 1e3:.2f} | {ratio['decode_ratio']} | "
            f"{peak} | {ratio['memory_ratio']} |"
        )
    lines += ["", f"Goals: {report['goals']}; complete: {report['complete']}; {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    """Through a temporary file and ``os.replace``: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the results from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(report: dict, out: Path) -> None:
    _ratios(report["runs"])
    _write_atomic(out / "gpu.json", json.dumps(report, indent=2) + "\n")
    _write_atomic(out / "gpu.md", _markdown(report))


def run(out: Path, device: str, tiny: bool, budget: float, multiples: tuple[int, ...]) -> dict:
    """The whole check; returns the report written to ``out``."""
    started = time.perf_counter()
    shape_name = "tiny" if tiny else "llama3-8b"
    shape = SHAPES[shape_name]
    flash = importlib.util.find_spec("flash_attn") is not None
    stock_attn = "flash_attention_2" if device == "cuda" and flash else "sdpa"
    report = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "flash_attn": flash,
        "shape": shape_name,
        "dims": shape,
        "window": shape["window"],
        "goals": GOALS,
        "check": {"length": shape["check_length"], "window": shape["check_window"], "rows": []},
        "runs": [],
        "complete": False,
        "seconds": 0.0,
    }
    out.mkdir(parents=True, exist_ok=True)
    report["check"]["rows"] = check_exactness(shape, device, stock_attn)
    report["seconds"] = time.perf_counter() - started
    _save(report, out)
    if device == "cuda":
        torch.cuda.empty_cache()

    model = _model(shape, device, torch.bfloat16, stock_attn)
    W = shape["window"]
    for multiple in multiples:
        L = multiple * W
        ids = torch.randint(0, shape["vocab"], (1, L), generator=torch.Generator().manual_seed(L)).to(device)
        for variant in VARIANTS:
            row = {"variant": variant, "length": L}
            report["runs"].append(row)
            if time.perf_counter() - started > budget:
                row["skipped"] = f"skipped: past the {budget:.0f} s budget"
                continue
            with torch.no_grad(), _scheme(variant, model, W, L + 3) as session:
                model(ids, use_cache=False, logits_to_keep=1)  # warm-up (compilation, allocator)
                row["prefill_s"], row["peak_bytes"] = _time_prefill(model, ids, device)
                row["decode_step_s"] = _time_decode(model, ids, device, session)
                row["kernels"] = session.kernels.name if session is not None else stock_attn
            report["seconds"] = time.perf_counter() - started
            _save(report, out)
    report["complete"] = all("prefill_s" in r for r in report["runs"])
    report["seconds"] = time.perf_counter() - started
    _save(report, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu.json and gpu.md")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="the tiny shape (seconds on CPU)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds before skipping runs")
    parser.add_argument(
        "--multiples", default=",".join(map(str, LENGTH_MULTIPLES)), help="lengths as multiples of W"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here (--device cpu --tiny runs the same code)", file=sys.stderr)
        return 2
    multiples = tuple(int(m) for m in args.multiples.split(","))
    report = run(args.out, args.device, args.tiny, args.budget, multiples)
    print(_markdown(report), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
