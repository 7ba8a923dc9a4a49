"""Largest |Δlogits| between cached greedy decoding and one prefill, per registered method.

    python scripts/decode_error.py

A tiny random Llama (W = 32, fp32), a 96-token prompt and 6 new tokens: for each method the
logits of every generate() step are compared with one prefill of the whole sequence under the
same method. Prints the installed transformers version and one line per method.
"""

from __future__ import annotations

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from lampe_calib import METHODS, LampeConfig, SigmoidMapping, method_context

W = 32


def main() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=W,
        initializer_range=0.1,
    )
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 96, (1, 3 * W), generator=torch.Generator().manual_seed(0))
    new = 6
    profile = LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=24.0))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name in METHODS:
        with torch.no_grad(), method_context(name, model, W, ids.shape[1] + new, profile):
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )
            prefill = model(out.sequences, use_cache=False).logits
        steps = torch.stack(out.logits, dim=1)
        error = (steps - prefill[:, ids.shape[1] - 1 : -1]).abs().max().item()
        print(f"{name:12s} max |Δlogits| = {error:.2e}")


if __name__ == "__main__":
    main()
