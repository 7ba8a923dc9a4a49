"""Can a model copy a pass key at all? Passkey retrieval at the shortest distance there is.

    python scripts/passkey_copy_probe.py --model reference

Each prompt is only the needle and the question (``_passkey.NEEDLE`` + ``QUESTION``, about 30
tokens, far inside any window): a model that can retrieve from its context answers the key here.
Prints how many greedy answers start with the key, and the mean log-probability per token of the
key's tokens after the question when that key was shown against when another key was shown: a
model that reads the key from its context gives the shown key a much higher probability.
"""

from __future__ import annotations

import argparse
import random

import torch

from lampe_calib import load_model, quiet_libraries


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def key_logprob(model, tokenizer, key: str, shown: str) -> float:
    """Mean log-probability per token of `` key`` after a prompt that showed ``shown``."""
    from lampe_calib.evaluation._passkey import NEEDLE, QUESTION

    prompt = _ids(tokenizer, NEEDLE.format(key=shown) + QUESTION)
    answer = _ids(tokenizer, f" {key}")
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + answer])).logits[0].float()  # (n, V)
    logp = logits.log_softmax(-1)
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(answer)) / len(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="reference")
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_libraries()  # before transformers loads tqdm, which reads its switch on import
    from lampe_calib.evaluation._passkey import NEEDLE, QUESTION, first_number, greedy_answer

    model, tokenizer = load_model(args.model)
    rng = random.Random(args.seed)
    keys = [str(rng.randint(10000, 99999)) for _ in range(args.keys)]
    copied = 0
    for key in keys:
        ids = torch.tensor([_ids(tokenizer, NEEDLE.format(key=key) + QUESTION)])
        answer = greedy_answer(model, tokenizer, ids, None, max_new_tokens=8)
        copied += first_number(answer) == key
    shown = sum(key_logprob(model, tokenizer, k, k) for k in keys) / len(keys)
    other = sum(key_logprob(model, tokenizer, k, keys[i - 1]) for i, k in enumerate(keys)) / len(keys)
    print(f"{args.model}: {copied}/{len(keys)} keys copied at the shortest distance ({ids.shape[1]} tokens)")
    print(f"mean log p per key token: {shown:.3f} when that key was shown, {other:.3f} when another was")


if __name__ == "__main__":
    main()
