"""Every method's logits on the shipped reference model, saved, and two saved runs compared: a
refactor of the engine or the methods should leave them identical.

    python benchmarks/method_logits.py save before.pt      # on the old checkout
    python benchmarks/method_logits.py save after.pt       # on the new one
    python benchmarks/method_logits.py compare before.pt after.pt

The input is two rows of L = 8·W = 2048 random tokens (fp32, seed 0), the second left-padded
by 300 tokens, run under every entry of ``METHODS`` with the shipped ``reference`` profile.
"""

from __future__ import annotations

import argparse
import sys

import torch

from lampe_calib import load_model, load_profile
from lampe_calib.methods import METHODS

PADDING = 300


def save(path: str) -> None:
    model, tokenizer = load_model("reference")
    window = model.config.max_position_embeddings
    length = 8 * window
    generator = torch.Generator().manual_seed(0)
    low = 0 if tokenizer.pad_token_id is None else tokenizer.pad_token_id + 1  # no pad token inside
    ids = torch.randint(low, model.config.vocab_size, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :PADDING] = 0
    profile = load_profile("reference")
    logits = {}
    for name, factory in METHODS.items():
        with torch.no_grad(), factory(model, window, length, profile):
            logits[name] = model(input_ids=ids, attention_mask=mask).logits.float()
    torch.save(logits, path)


def compare(before: str, after: str) -> bool:
    a, b = torch.load(before), torch.load(after)
    same = True
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name:12s} only in {before if name in a else after}")
            same = False
            continue
        full = (a[name][0] - b[name][0]).abs().max().item()
        padded = (a[name][1, PADDING:] - b[name][1, PADDING:]).abs().max().item()
        identical = full == 0 and padded == 0
        same &= identical
        print(f"{name:12s} max |Δ| {full:.3g} (full row), {padded:.3g} (padded row); identical: {identical}")
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("save").add_argument("path")
    pair = sub.add_parser("compare")
    pair.add_argument("before")
    pair.add_argument("after")
    args = parser.parse_args(argv)
    if args.command == "save":
        save(args.path)
        return 0
    return 0 if compare(args.before, args.after) else 1


if __name__ == "__main__":
    sys.exit(main())
