"""Train the `reference` model: a small Llama with a short window on PG-19 (pg19-mini train split).

The reference model is the toolkit's embedded default (tests, quick start, CI). It has to show the
phenomenon LaMPE is about (arXiv 2508.02308): perplexity collapses past the pretraining window W,
and for inputs longer than W the best mapping length m sits *inside* the window (an interior
optimum, the "V" of PPL against m), not at W.

Why the length mix: real pretraining corpora are dominated by short documents, so large relative
distances are seen rarely and are learned worse than short ones (paper, Sec. 3). A model trained
on uniform full-window sequences learns every distance up to W equally well and then prefers
m = W. Training on a skewed mix of sequence lengths (most tokens in short sequences, few in
full-window ones) reproduces the skew, and with it the interior optimum.

Steps:
  1. a byte-level BPE tokenizer trained with `tokenizers` on the train split (or reused with
     --tokenizer);
  2. the train split tokenized into one stream, books separated by the end-of-text token;
  3. a LlamaForCausalLM with max_position_embeddings = W trained on random crops of the stream,
     each optimizer step holding `--tokens-per-step` tokens split over the lengths of
     `--length-mix` by token share;
  4. config.json, model.safetensors (fp32), tokenizer.json, tokenizer_config.json and
     train_log.json written to --out.

Example (the shipped recipe is recorded in lampe_calib/assets/reference/MODEL_CARD.md):

    python scripts/train_reference.py --device cpu --out lampe_calib/assets/reference
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

logger = logging.getLogger("train_reference")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "pg19-mini"
DEFAULT_OUT = REPO_ROOT / "lampe_calib" / "assets" / "reference"
EOS = "<|endoftext|>"


def parse_length_mix(spec: str) -> dict[int, float]:
    """Parse a length mix "LEN:SHARE,..." into {length: token share}, shares normalised to 1.

    Example: "32:1,64:1,128:2" -> {32: 0.25, 64: 0.25, 128: 0.5}
    """
    mix: dict[int, float] = {}
    for item in spec.split(","):
        length, _, share = item.partition(":")
        if not share or int(length) < 2 or float(share) < 0:
            raise ValueError(f"--length-mix: bad item {item!r} (want LEN:SHARE, LEN >= 2, SHARE >= 0)")
        mix[int(length)] = mix.get(int(length), 0.0) + float(share)
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"--length-mix: shares sum to {total}")
    return {length: share / total for length, share in sorted(mix.items())}


def read_texts(path: Path) -> list[str]:
    """The `text` field of every line of a JSONL file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style pre-tokenization, no added BOS) with one special token, EOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        unk_token=EOS,
        model_max_length=1_000_000,  # inputs past the window are the point of the toolkit
    )


def tokenize_stream(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """All texts as one int64 stream (N,), each followed by EOS."""
    ids = tokenizer.backend_tokenizer.encode_batch(texts)
    eos = tokenizer.eos_token_id
    stream = [t for enc in ids for t in (*enc.ids, eos)]
    return torch.tensor(stream, dtype=torch.int64)


def build_model(args: argparse.Namespace, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.window,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
        tie_word_embeddings=True,  # halves the parameter count of a 4096-token vocabulary
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay to 10% of --lr."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def sample_step(
    stream: torch.Tensor, mix: dict[int, float], tokens: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """One optimizer step's micro-batches: for each length s, (n_s, s + 1) random crops of the stream.

    n_s = share_s * tokens / s, rounded stochastically so that the mix holds in expectation.
    """
    batches = []
    for length, share in mix.items():
        expected = share * tokens / length
        n = int(expected) + int(torch.rand((), generator=gen).item() < expected - int(expected))
        if n == 0:
            continue
        starts = torch.randint(0, stream.numel() - length - 1, (n,), generator=gen)
        batches.append(torch.stack([stream[s : s + length + 1] for s in starts.tolist()]))
    return batches


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    mix = parse_length_mix(args.length_mix)
    if max(mix) > args.window:
        raise ValueError(f"--length-mix: length {max(mix)} exceeds --window {args.window}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    texts = read_texts(Path(args.data) / "train.jsonl")
    if args.tokenizer:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    else:
        tokenizer = train_tokenizer(texts, args.vocab_size)
    stream = tokenize_stream(tokenizer, texts)
    t_tok = time.perf_counter() - t0
    logger.info("tokenizer %d tokens, train stream %d tokens (%.0fs)", len(tokenizer), stream.numel(), t_tok)

    model = build_model(args, tokenizer).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model %.2fM parameters", n_params / 1e6)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )

    model.train()
    losses: list[float] = []
    tokens_seen = 0
    t1 = time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        batches = sample_step(stream, mix, args.tokens_per_step, gen)
        n_tokens = sum(b.shape[0] * (b.shape[1] - 1) for b in batches)
        step_loss = 0.0
        for batch in batches:  # (n_s, s + 1)
            batch = batch.to(args.device)
            logits = model(input_ids=batch[:, :-1]).logits  # (n_s, s, V)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum"
            )
            (loss / n_tokens).backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss / n_tokens)
        tokens_seen += n_tokens
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            recent = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            elapsed = time.perf_counter() - t1
            logger.info(
                "step %d/%d loss %.4f (%.2f steps/s, %.0fs)",
                step + 1,
                args.steps,
                recent,
                (step + 1) / elapsed,
                elapsed,
            )
    t_train = time.perf_counter() - t1

    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    tail = losses[-min(100, len(losses)) :]
    log = {
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "length_mix_token_share": {str(k): v for k, v in mix.items()},
        "parameters": n_params,
        "train_stream_tokens": stream.numel(),
        "tokens_seen": tokens_seen,
        "final_train_loss_last100": sum(tail) / len(tail),
        "tokenizer_seconds": round(t_tok, 1),
        "train_seconds": round(t_train, 1),
        "device": args.device,
        "torch": torch.__version__,
        "losses_every_50": [round(x, 4) for x in losses[::50]],
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    logger.info("saved to %s (train %.0fs, final loss %.4f)", out, t_train, log["final_train_loss_last100"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding train.jsonl (field `text`)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder for weights and tokenizer")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--tokenizer", default="", help="reuse this tokenizer folder instead of training one")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--window", type=int, default=256, help="pretraining window W (max_position_embeddings)")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=688, help="SwiGLU width (about 8/3 of --hidden)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument(
        "--length-mix",
        default="32:45,64:30,128:23,256:2",
        help="training sequence lengths and their share of each step's tokens, LEN:SHARE,...",
    )
    p.add_argument("--tokens-per-step", type=int, default=4096)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--log-every", type=int, default=100)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    train(args)


if __name__ == "__main__":
    main()
