"""``lampe-eval passkey``: passkey retrieval (``evaluation._passkey``) as a rate with its 95 %
Wilson interval; ``--samples`` keys at each of ``--depths``, the same keys for every method."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ._args import parse_depths
from ._task import ContextFor, Prepared
from ._task_generation import GenerationTask

__all__ = ["PasskeyTask"]


class PasskeyTask(GenerationTask):
    name = "passkey"
    help = "passkey retrieval accuracy"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--samples", type=int, default=2, help="keys per depth (default 2)")
        parser.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="key depths in [0, 1]")
        parser.add_argument("--new-tokens", type=int, default=10, help="tokens generated per prompt")

    def check(self, args: argparse.Namespace, methods: Sequence[str] | None) -> None:
        parse_depths(args.depths)
        super().check(args, methods)

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"depths": list(parse_depths(args.depths)), "new_tokens": args.new_tokens}

    def extra_fields(self, scores: Sequence[float]) -> dict[str, Any]:
        return {"correct": int(sum(scores)), "trials": len(scores)}

    def heading(self, title: str, task: str | None, rows: list[dict]) -> str:
        return f"{title}: passkey accuracy"

    def prepare(self, args, model, tokenizer, methods, lengths, context_for: ContextFor) -> Prepared:
        from ..evaluation._passkey import passkey_prompts

        depths = parse_depths(args.depths)
        prompts = {}
        for length in lengths:
            try:
                prompts[length] = passkey_prompts(
                    tokenizer, length - args.new_tokens, depths, args.samples, args.seed
                )
            except ValueError as error:
                raise ValueError(f"--lengths {length}: {error}") from error
        cells = [
            self.generation_cell(
                model, tokenizer, prompts[n], args.new_tokens, context_for(m, n), (None, m, n)
            )
            for n in lengths
            for m in methods
        ]
        per_length = len(prompts[lengths[0]])
        data = f"passkey prompts: {per_length} per length ({args.samples} per depth, depths {args.depths})"
        return Prepared(data, cells)
