"""Check that the bundled reference model shows the phenomenon LaMPE is about (arXiv 2508.02308).

Three checks on PG-19 books (first L tokens of each book, books shorter than L skipped), W being
the model's window (max_position_embeddings):

  1. vanilla collapse: PPL over the first 4W tokens >= 1.3 x PPL over the first W tokens;
  2. the V: for some L in {2W, 4W, 8W}, PPL against the mapping length m (LaMPE with a fixed m)
     is lowest strictly inside the swept range, not at its largest m;
  3. LaMPE at its best m beats vanilla and linear position interpolation (PI) at 2W, 4W and 8W.

PPL = exp(total NLL / total predicted tokens) over all books, the loss computed in chunks of the
hidden states. The numbers quoted in lampe_calib/assets/reference/MODEL_CARD.md come from:

    python scripts/reference_report.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib.methods._registry import METHODS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "lampe_calib" / "assets" / "reference"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "pg19-mini" / "validation.jsonl"
COLLAPSE_RATIO = 1.3


def load_prefixes(path: Path, tokenizer, n_tokens: int, books: int) -> tuple[torch.Tensor, int]:
    """First n_tokens tokens of the first `books` books holding that many, as (B, n_tokens) int64.

    Returns the tensor and the number of books skipped for being shorter.
    """
    rows, skipped = [], 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            # 16 characters per token is far above this tokenizer's ~4: the prefix always suffices.
            ids = tokenizer(text[: 16 * n_tokens], add_special_tokens=False)["input_ids"]
            if len(ids) < n_tokens:
                skipped += 1
                continue
            rows.append(ids[:n_tokens])
            if len(rows) == books:
                break
    if not rows:
        raise ValueError(f"--data: no book in {path} has {n_tokens} tokens")
    return torch.tensor(rows, dtype=torch.int64), skipped


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, chunk: int = 512) -> float:
    """PPL of `model` on each row of ids (B, L), one row per forward, next-token NLL over L - 1 tokens."""
    total, count = 0.0, 0
    for row in ids:
        hidden = model.model(input_ids=row[None]).last_hidden_state[0]  # (L, D)
        for start in range(0, row.numel() - 1, chunk):
            stop = min(start + chunk, row.numel() - 1)
            logits = model.lm_head(hidden[start:stop]).float()  # (chunk, V)
            total += torch.nn.functional.cross_entropy(
                logits, row[start + 1 : stop + 1], reduction="sum"
            ).item()
            count += stop - start
    return math.exp(total / count)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (config, weights, tokenizer)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="JSONL file with a `text` field per book")
    p.add_argument(
        "--books", type=int, default=10, help="at most this many books (the first ones long enough)"
    )
    p.add_argument("--head", type=int, default=32, help="LaMPE s1")
    p.add_argument("--tail", type=int, default=16, help="LaMPE s2")
    p.add_argument("--lengths", default="", help="L values for the m sweep (default 2W,3W,4W,6W,8W)")
    p.add_argument(
        "--mappings", default="", help="m values (default W/4 to 1.25W: 64,96,...,320 for W = 256)"
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", default="", help="also write every PPL to this JSON file")
    args = p.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    w = model.config.max_position_embeddings
    lengths = (
        [int(x) for x in args.lengths.split(",")] if args.lengths else [2 * w, 3 * w, 4 * w, 6 * w, 8 * w]
    )
    if args.mappings:
        mappings = [int(x) for x in args.mappings.split(",")]
    else:
        mappings = [w // 4, 3 * w // 8, *range(w // 2, w + 1, w // 16), 9 * w // 8, 5 * w // 4]
    checked = [2 * w, 4 * w, 8 * w]
    lengths = sorted({*lengths, *checked})  # check 3 needs the sweep at each checked length
    ids, skipped = load_prefixes(Path(args.data), tokenizer, max(lengths + checked), args.books)
    ids = ids.to(args.device)
    print(f"model {args.model}  W={w}  books={ids.shape[0]} (skipped {skipped} shorter)  data {args.data}")
    t0 = time.perf_counter()

    vanilla = {n: perplexity(model, ids[:, :n]) for n in sorted({w, *checked, *lengths})}
    pi = {}
    for n in sorted({*checked, *lengths}):
        with METHODS["pi"](model, w, n, None):
            pi[n] = perplexity(model, ids[:, :n])
    sweep: dict[int, dict[int, float]] = {}
    for n in lengths:
        sweep[n] = {}
        for m in mappings:
            if m >= n:  # nothing to compress: LaMPE is the stock model
                continue
            with apply_lampe(model, LampeConfig(head=args.head, tail=args.tail, mapping_length=m)):
                sweep[n][m] = perplexity(model, ids[:, :n])
        print(f"  swept L={n} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)

    ratio = vanilla[4 * w] / vanilla[w]
    ok1 = ratio >= COLLAPSE_RATIO
    print(f"\n[1] vanilla collapse: PPL(first {w}) = {vanilla[w]:.2f}, ", end="")
    print(f"PPL(first {4 * w}) = {vanilla[4 * w]:.2f}")
    print(f"    ratio {ratio:.2f} (need >= {COLLAPSE_RATIO})  {'PASS' if ok1 else 'FAIL'}")

    print(f"\n[2] LaMPE (head={args.head}, tail={args.tail}) PPL against m; m* = argmin")
    print("    L     m*  | +% vs ends and m=W |  " + " ".join(f"{m:>6d}" for m in mappings))
    interior = {}
    for n in lengths:
        row = sweep[n]
        best_m = min(row, key=row.get)
        best = row[best_m]
        ms = sorted(row)
        interior[n] = ms[0] < best_m < ms[-1]
        ends = f"{100 * (row[ms[0]] / best - 1):+.1f} {100 * (row.get(w, math.nan) / best - 1):+.1f} "
        ends += f"{100 * (row[ms[-1]] / best - 1):+.1f}"
        cells = " ".join(f"{row[m]:6.2f}" if m in row else "     -" for m in mappings)
        print(f"  {n:5d} {best_m:5d} | {ends:>18} |  {cells}")
    ok2 = any(interior.get(n, False) for n in checked)
    m_star = {n: min(sweep[n], key=sweep[n].get) for n in lengths}
    print(f"    m*(L) = {m_star}")
    print(f"    interior optimum at some L in {checked}: {'PASS' if ok2 else 'FAIL'}")

    print("\n[3] PPL at 2W, 4W, 8W: vanilla, PI, LaMPE at its best m")
    ok3 = True
    for n in checked:
        best = min(sweep[n].values())
        win = best < vanilla[n] and best < pi[n]
        ok3 &= win
        verdict = "PASS" if win else "FAIL"
        print(
            f"  L={n:5d}  vanilla {vanilla[n]:8.2f}  PI {pi[n]:8.2f}",
            f" LaMPE(m={m_star[n]}) {best:8.2f}  {verdict}",
        )
    print(f"\nall checks: {'PASS' if ok1 and ok2 and ok3 else 'FAIL'}  ({time.perf_counter() - t0:.0f}s)")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "window": w,
                    "books": ids.shape[0],
                    "head": args.head,
                    "tail": args.tail,
                    "vanilla": vanilla,
                    "pi": pi,
                    "lampe": {str(n): {str(m): v for m, v in row.items()} for n, row in sweep.items()},
                },
                indent=1,
            )
            + "\n"
        )
    return 0 if ok1 and ok2 and ok3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
