"""``lampe-eval`` end to end on a tiny model saved to disk: tables, JSON schema, user errors."""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import string

import pytest
import torch
from calib_support import minimal_profile
from char_tokenizer import char_tokenizer
from conftest import TINY_WINDOW, tiny_model

from lampe_calib.cli import eval_main
from lampe_calib.cli._eval import parse_lengths, parse_methods, write_json_atomic
from lampe_calib.evaluation._generation import evaluate_generation
from lampe_calib.evaluation._perplexity import evaluate_perplexity
from lampe_calib.evaluation._rates import wilson_interval

W = TINY_WINDOW


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tokenizer = char_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer))
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def books_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "books.jsonl"
    with path.open("w") as f:
        for n in (400, 500, 50):  # the last book is shorter than 2·W tokens and gets skipped there
            text = "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(n))
            f.write(json.dumps({"text": text, "title": f"book of {n}"}) + "\n")
    return path


def test_parse_lengths_and_methods():
    assert parse_lengths("256, 2W,4w,8K", 256) == (256, 512, 1024, 8192)
    assert parse_lengths("0.5W,100,100", 256) == (128, 100)
    for bad in ("abc", "1.5", "0.3W", "1", "4W,"):
        with pytest.raises(ValueError, match="--lengths"):
            parse_lengths(bad, 256)
    assert parse_methods("vanilla, yarn,lampe,yarn") == ("vanilla", "yarn", "lampe")
    with pytest.raises(KeyError, match="--methods: unknown method 'rope'"):
        parse_methods("vanilla,rope")


@pytest.mark.parametrize("command", ["ppl", "passkey", "ruler"])
def test_methods_help_lists_every_registered_method(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse would break the long list mid-word
    with pytest.raises(SystemExit):
        eval_main([command, "--help"])
    help_text = capsys.readouterr().out
    assert "vanilla,pi,ntk,yarn,selfextend,dca,string,rerope,lampe-fixed,lampe" in help_text
    assert parse_methods("rerope, string") == ("rerope", "string")


def test_write_json_atomic(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def _stock_ppl(model_dir, books_file, length, rows):
    """PPL of the first `length` tokens of the given book rows, from full logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = char_tokenizer()
    texts = [json.loads(line)["text"] for line in books_file.read_text().splitlines()]
    nll, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([tokenizer(texts[row])["input_ids"][:length]])
        with torch.no_grad():
            logits = model(ids).logits
        nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        count += length - 1
    return math.exp(nll / count), count


def test_ppl_table_and_json(model_dir, books_file, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    argv = ["ppl", "--model", str(model_dir), "--methods", "vanilla,pi,selfextend,dca", "--lengths", "1W,2W"]
    argv += ["--data", str(books_file), "--samples", "3", "--json", str(out)]
    assert eval_main(argv) == 0
    stdout = capsys.readouterr().out
    for word in ("vanilla", "pi", "selfextend", "dca", f"L={W}", f"L={2 * W}"):
        assert word in stdout
    data = json.loads(out.read_text())
    assert set(data) == {"model", "profile", "command", "reference", "settings", "results"}
    assert data["model"] == str(model_dir) and data["reference"] == "vanilla"
    assert data["profile"] is None  # no profile method was asked for
    assert shlex.split(data["command"]) == ["lampe-eval", *argv]  # what reproduces the file
    results = data["results"]
    assert [(r["method"], r["length"]) for r in results] == [
        (m, n) for n in (W, 2 * W) for m in ("vanilla", "pi", "selfextend", "dca")
    ]
    by_cell = {(r["method"], r["length"]): r for r in results}
    for r in results:
        assert {"method", "length", "ppl", "tokens", "books", "ratio", "ci"} <= set(r)
        assert r["books"] == (3 if r["length"] == W else 2)  # the 50-character book is skipped at 2W
        assert r["tokens"] == r["books"] * (r["length"] - 1) == sum(r["book_tokens"])
        assert r["block_tokens"] == [[n] for n in r["book_tokens"]]  # books shorter than a block
        assert sum(r["book_nll"]) == pytest.approx(math.log(r["ppl"]) * r["tokens"], rel=1e-9)
        # The ratio is the PPL ratio to vanilla on the same books, inside its interval.
        vanilla = by_cell["vanilla", r["length"]]["ppl"]
        assert r["ratio"] == pytest.approx(r["ppl"] / vanilla, rel=1e-9)
        assert r["ci"][0] <= r["ratio"] <= r["ci"][1]
    assert by_cell["vanilla", W]["ci"] == [1.0, 1.0]
    assert by_cell["pi", 2 * W]["ci"][0] < by_cell["pi", 2 * W]["ci"][1]
    by = {(r["method"], r["length"]): r["ppl"] for r in results}
    want, _ = _stock_ppl(model_dir, books_file, W, rows=(0, 1, 2))
    assert by["vanilla", W] == pytest.approx(want, rel=1e-5)
    assert by["pi", W] == pytest.approx(want, rel=1e-5)  # nothing to extend at L = W
    want_2w, _ = _stock_ppl(model_dir, books_file, 2 * W, rows=(0, 1))
    assert by["vanilla", 2 * W] == pytest.approx(want_2w, rel=1e-5)
    assert by["pi", 2 * W] != pytest.approx(want_2w, rel=1e-4)


def test_passkey_table_and_json(model_dir, tmp_path, capsys):
    out = tmp_path / "passkey.json"
    argv = ["passkey", "--model", str(model_dir), "--methods", "vanilla,selfextend", "--lengths", "12W"]
    argv += ["--samples", "1", "--depths", "0,1", "--new-tokens", "4", "--json", str(out)]
    assert eval_main(argv) == 0
    printed = capsys.readouterr().out
    assert "selfextend" in printed and "[low, high]: 95 % Wilson interval of the rate" in printed
    results = json.loads(out.read_text())["results"]
    assert [(r["method"], r["length"], r["trials"]) for r in results] == [
        ("vanilla", 12 * W, 2),
        ("selfextend", 12 * W, 2),
    ]
    for r in results:
        assert set(r) == {"method", "length", "accuracy", "correct", "trials", "scores", "ci"}
        assert r["accuracy"] == r["correct"] / r["trials"]
        # One outcome per prompt (depth 0, then depth 1), and the rate's Wilson interval.
        assert len(r["scores"]) == 2 and set(r["scores"]) <= {0.0, 1.0} and sum(r["scores"]) == r["correct"]
        assert r["ci"] == list(wilson_interval(r["correct"], r["trials"]))
        low, high = (round(100 * x) for x in r["ci"])
        assert f"({r['correct']}/2) [{low}%, {high}%]" in printed


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["ppl", "--methods", "vanilla,rope", "--lengths", "1W"], "--methods"),
        (["ppl", "--methods", "vanilla", "--lengths", "1W,x"], "--lengths"),
        (["ppl", "--methods", "vanilla", "--lengths", "1W", "--samples", "0"], "--samples"),
        (["ppl", "--methods", "vanilla", "--lengths", "64W", "--samples", "3"], "--lengths"),
        (["ppl", "--methods", "vanilla", "--lengths", "1W", "--samples", "4"], "--samples 4"),
        (["ppl", "--methods", "lampe", "--lengths", "1W"], "--profile"),
        (["ppl", "--methods", "vanilla", "--lengths", "1W", "--data", "/no/such/file.jsonl"], "--data"),
        (["ppl", "--methods", "vanilla", "--lengths", "1W", "--json", "/no/such/dir/out.json"], "--json"),
        (["passkey", "--methods", "vanilla", "--lengths", "2W"], "--lengths"),
        (["passkey", "--methods", "vanilla", "--lengths", "12W", "--depths", "0,2"], "--depths"),
        (["ppl", "--methods", "vanilla", "--reference", "pi"], "--reference"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(model_dir, books_file, tmp_path, capsys, argv, flag):
    argv = list(argv)
    argv[1:1] = ["--model", str(model_dir)]
    if argv[0] == "ppl" and "--data" not in argv:
        argv += ["--data", str(books_file)]
    if "--json" not in argv:
        argv += ["--json", str(tmp_path / "out.json")]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lampe-eval: error:") and "\n" not in err and flag in err
    assert not (tmp_path / "out.json").exists()


def test_unknown_model_is_a_user_error(books_file, capsys):
    argv = ["ppl", "--model", "no-such-model", "--methods", "vanilla", "--lengths", "256"]
    argv += ["--data", str(books_file)]
    assert eval_main(argv) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_lampe_methods_read_the_profile(model_dir, books_file, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from lampe_calib import LampeConfig, SigmoidMapping, apply_lampe

    profile = tmp_path / "tiny.json"
    profile.write_text(json.dumps(minimal_profile(W)))
    out = tmp_path / "ppl.json"
    argv = ["ppl", "--model", str(model_dir), "--profile", str(profile), "--methods", "lampe,lampe-fixed"]
    argv += ["--lengths", "4W", "--data", str(books_file), "--samples", "3", "--json", str(out)]
    assert eval_main(argv) == 0
    written = json.loads(out.read_text())
    assert written["profile"] == str(profile)  # the file says which profile gave its lampe rows
    got = {r["method"]: r["ppl"] for r in written["results"]}

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = char_tokenizer()
    texts = [json.loads(line)["text"] for line in books_file.read_text().splitlines()]
    books = [torch.tensor(tokenizer(texts[row])["input_ids"][: 4 * W]) for row in (0, 1)]
    for name, config in (
        ("lampe", LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=24.0))),
        ("lampe-fixed", LampeConfig(head=4, tail=2, mapping_length=0.75 * W)),
    ):
        want = evaluate_perplexity(model, books, context=lambda c=config: apply_lampe(model, c)).ppl
        assert got[name] == pytest.approx(want, rel=1e-5)
    assert got["lampe"] != pytest.approx(got["lampe-fixed"], rel=1e-4)

    profile.write_text(json.dumps(minimal_profile(2 * W)))
    assert eval_main(argv) == 2
    assert "--profile" in capsys.readouterr().err


def test_ppl_without_samples_takes_every_book_of_a_small_file(model_dir, tmp_path, capsys):
    """A file of fewer books than the default takes them all; only an explicit larger
    --samples is an error (tests/cli/test_bad_input.py)."""
    rng = random.Random(1)
    data = tmp_path / "seven.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": "".join(rng.choice(string.ascii_lowercase) for _ in range(80))}) + "\n"
            for _ in range(7)
        )
    )
    out = tmp_path / "ppl.json"
    argv = ["ppl", "--model", str(model_dir), "--methods", "vanilla", "--lengths", "1W", "--data", str(data)]
    assert eval_main([*argv, "--json", str(out)]) == 0
    assert [r["books"] for r in json.loads(out.read_text())["results"]] == [7]


def test_library_progress_bars_are_silenced():
    """The GGUF loader's raw tqdm bar as well as transformers' and datasets' own, in a fresh
    process as an entry point sees them (tqdm reads its switch when imported)."""
    import subprocess
    import sys

    code = (
        "from lampe_calib.cli import quiet_library_progress; quiet_library_progress(); "
        "import datasets; from transformers import modeling_gguf_pytorch_utils as g; "
        "from transformers.utils import logging as h; "
        "print(g.tqdm(range(2)).disable, h.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["True", "False", "False"]


def _count_evaluations(monkeypatch, fail_after=None):
    """Count the perplexity evaluations ``lampe-eval ppl`` runs; with ``fail_after``, the next
    one after that many crashes as a killed run would."""
    from lampe_calib.evaluation import _perplexity

    real = evaluate_perplexity  # the function itself, not an earlier counting wrapper
    calls = []

    def counted(*args, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_perplexity, "evaluate_perplexity", counted)
    return calls


def test_ppl_json_resumes_a_half_written_file(model_dir, books_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ppl.json"
    argv = ["ppl", "--model", str(model_dir), "--methods", "vanilla,pi,dca", "--lengths", "1W,2W"]
    argv += ["--data", str(books_file), "--samples", "3", "--json", str(out)]
    assert eval_main(argv) == 0
    full = json.loads(out.read_text())

    # Killed during the fourth cell: the three finished ones are on disk, nothing else is.
    out.unlink()
    calls = _count_evaluations(monkeypatch, fail_after=3)
    assert eval_main(argv) == 130
    assert len(calls) == 3
    half = json.loads(out.read_text())
    assert [(r["method"], r["length"]) for r in half["results"]] == [("vanilla", W), ("pi", W), ("dca", W)]
    assert [p.name for p in tmp_path.iterdir()] == ["ppl.json"]  # no temporary file left

    # The same command again runs only the three missing cells and gives the same file.
    calls = _count_evaluations(monkeypatch)
    capsys.readouterr()
    assert eval_main(argv) == 0
    assert len(calls) == 3
    assert "(3 of 6 cells already there)" in capsys.readouterr().err
    assert json.loads(out.read_text()) == full

    # Complete: nothing runs; a new method adds its own cells only.
    calls = _count_evaluations(monkeypatch)
    assert eval_main(argv) == 0 and calls == []
    more = [*argv[:4], "vanilla,pi,dca,selfextend", *argv[5:]]
    assert eval_main(more) == 0 and len(calls) == 2
    cells = [(r["method"], r["length"]) for r in json.loads(out.read_text())["results"]]
    assert sorted(cells) == sorted((m, n) for m in ("vanilla", "pi", "dca", "selfextend") for n in (W, 2 * W))

    # Another reference: the ratios are taken again from the stored blocks, nothing runs.
    assert eval_main([*more, "--reference", "pi"]) == 0 and len(calls) == 2
    rows = {(r["method"], r["length"]): r for r in json.loads(out.read_text())["results"]}
    assert rows["pi", 2 * W]["ci"] == [1.0, 1.0]
    want = rows["dca", 2 * W]["ppl"] / rows["pi", 2 * W]["ppl"]
    assert rows["dca", 2 * W]["ratio"] == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--seed", "1"], r"--seed: file 0, now 1"),
        (["--samples", "2"], r"--samples: file 3, now 2"),
        (["--dtype", "bfloat16"], r"--dtype: file 'float32', now 'bfloat16'"),
        (["--data", "{other}"], r"--data: file '.*books.jsonl', now '.*other.jsonl'"),
    ],
)
def test_ppl_json_made_with_other_settings_is_refused(
    change, message, model_dir, books_file, tmp_path, capsys, monkeypatch
):
    import re

    other = tmp_path / "other.jsonl"
    other.write_bytes(books_file.read_bytes())
    out = tmp_path / "ppl.json"
    argv = ["ppl", "--model", str(model_dir), "--methods", "vanilla", "--lengths", "1W"]
    argv += ["--data", str(books_file), "--samples", "3", "--json", str(out)]
    assert eval_main(argv) == 0
    before = out.read_bytes()
    capsys.readouterr()
    calls = _count_evaluations(monkeypatch)
    assert eval_main([*argv, *(c.replace("{other}", str(other)) for c in change)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(
        rf"--json '.*ppl.json' was made with other settings \({message}\)", err
    )
    assert calls == [] and out.read_bytes() == before


def _count_generations(monkeypatch, fail_after=None):
    """Count the generation cells ``lampe-eval passkey``/``ruler`` run (one evaluator call each);
    with ``fail_after``, the next one after that many crashes as a killed run would."""
    from lampe_calib.evaluation import _generation

    calls = []

    def counted(*args, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise KeyboardInterrupt
        calls.append(1)
        return evaluate_generation(*args, **kwargs)

    monkeypatch.setattr(_generation, "evaluate_generation", counted)
    return calls


def test_passkey_json_resumes_a_half_written_file(model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "passkey.json"
    argv = ["passkey", "--model", str(model_dir), "--methods", "vanilla,selfextend,dca", "--lengths", "12W"]
    argv += ["--samples", "1", "--depths", "0,1", "--new-tokens", "4", "--json", str(out)]
    calls = _count_generations(monkeypatch)
    assert eval_main(argv) == 0 and len(calls) == 3
    full = json.loads(out.read_text())

    # Killed during the second cell: the first is on disk with its outcomes, nothing else is.
    out.unlink()
    calls = _count_generations(monkeypatch, fail_after=1)
    assert eval_main(argv) == 130 and len(calls) == 1
    half = json.loads(out.read_text())
    assert half["results"] == full["results"][:1] and half["settings"] == full["settings"]
    assert [p.name for p in tmp_path.iterdir()] == ["passkey.json"]  # no temporary file left

    # The same command runs the two missing cells only and gives the same file.
    calls = _count_generations(monkeypatch)
    capsys.readouterr()
    assert eval_main(argv) == 0 and len(calls) == 2
    assert "(1 of 3 cells already there)" in capsys.readouterr().err
    assert json.loads(out.read_text()) == full

    # Complete: nothing runs; other depths are other settings, refused with the file untouched.
    assert eval_main(argv) == 0 and len(calls) == 2
    other = [*argv[:-6], "--depths", "0.5", *argv[-4:]]
    assert eval_main(other) == 2 and len(calls) == 2
    assert "--depths: file [0.0, 1.0], now [0.5]" in capsys.readouterr().err
    assert json.loads(out.read_text()) == full


def test_passkey_json_of_an_earlier_version_resumes(model_dir, tmp_path, capsys, monkeypatch):
    """A file whose passkey rows have no per-prompt scores (written before they were kept) is
    read back: its cells are not run again, and the table shows their interval from the counts."""
    out = tmp_path / "passkey.json"
    argv = ["passkey", "--model", str(model_dir), "--methods", "vanilla", "--lengths", "12W"]
    argv += ["--samples", "1", "--depths", "0,1", "--new-tokens", "4", "--json", str(out)]
    assert eval_main(argv) == 0
    data = json.loads(out.read_text())
    data["results"] = [{"method": "vanilla", "length": 12 * W, "accuracy": 0.5, "correct": 1, "trials": 2}]
    out.write_text(json.dumps(data))
    calls = _count_generations(monkeypatch)
    capsys.readouterr()
    assert eval_main(argv) == 0 and calls == []
    assert "50% (1/2) [9%, 91%]" in capsys.readouterr().out


def test_progress_is_lines_off_a_terminal(model_dir, books_file, capsys):
    argv = ["ppl", "--model", str(model_dir), "--methods", "vanilla,pi", "--lengths", "1W"]
    assert eval_main([*argv, "--data", str(books_file), "--samples", "2"]) == 0
    err = capsys.readouterr().err
    assert f"vanilla L={W}: 2/2 (" in err and f"pi L={W}: 2/2 (" in err
    for line in ("lampe-eval ppl", f"model    {model_dir} (W={W}, float32 on cpu)", "methods  vanilla, pi"):
        assert line in err
    assert "data     " + str(books_file) + ": 2 books" in err
    assert "\x1b[" not in err  # no terminal codes in a log


def test_an_unwritable_json_fails_before_the_model_loads(model_dir, monkeypatch, capsys):
    from lampe_calib import models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_model", no_load)
    argv = ["ppl", "--model", str(model_dir), "--json", "/proc/results.json"]
    assert eval_main(argv) == 2
    assert "cannot write in '/proc'" in capsys.readouterr().err


def test_the_default_model_is_the_shipped_reference(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert (
        eval_main(["ppl", "--methods", "vanilla", "--lengths", "1W", "--samples", "1", "--json", str(out)])
        == 0
    )
    record = json.loads(out.read_text())
    assert record["model"] == "reference"
    assert [(r["method"], r["length"]) for r in record["results"]] == [("vanilla", 256)]
    assert "reference" in capsys.readouterr().err  # the header names the model


def test_every_subcommand_is_a_task_of_the_dispatch_table():
    import argparse

    from lampe_calib.cli._eval import TASKS, _parser
    from lampe_calib.cli._task import EvalTask

    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(commands.choices) == list(TASKS) == ["ppl", "passkey", "ruler"]
    want = {"ppl": {"data"}, "passkey": {"depths", "new_tokens"}, "ruler": {"new_tokens"}}
    for name, task in TASKS.items():
        assert isinstance(task, EvalTask) and task.name == name and task.help
        for hook in ("add_arguments", "prepare", "print_tables"):  # each task defines its own
            assert getattr(type(task), hook) is not getattr(EvalTask, hook)
        args = parser.parse_args([name])
        task.check(args, None)  # the defaults pass; ppl resolves its --data here
        assert args.command == name and set(task.settings(args)) == want[name]


def test_a_new_task_is_one_entry_of_the_table(model_dir, tmp_path, capsys, monkeypatch):
    """A task defined outside the package runs end to end once it is in ``TASKS``: its flags
    parse, its cells run under each method and resume from ``--json``, its table prints."""
    from lampe_calib.cli import _eval
    from lampe_calib.cli._task import Cell, EvalTask, Prepared

    class Count(EvalTask):
        name, help = "count", "the number of tokens of a prompt of each length"

        def add_arguments(self, parser):
            parser.add_argument("--samples", type=int, default=1)

        def settings(self, args):
            return {"unit": "tokens"}

        def prepare(self, args, model, tokenizer, methods, lengths, context_for):
            def cell(method, length):
                def run(progress):
                    with context_for(method, length)():
                        progress(1, 1)
                    return {"method": method, "length": length, "tokens": length}

                return Cell((None, method, length), f"{method} L={length}", 1, run)

            return Prepared("none", [cell(m, n) for n in lengths for m in methods])

        def print_tables(self, out, args, title, methods, lengths, rows):
            out.print(f"{title}: " + " ".join(f"{r['method']}={r['tokens']}" for r in rows))

    monkeypatch.setitem(_eval.TASKS, "count", Count())
    out = tmp_path / "count.json"
    argv = [
        "count",
        "--model",
        str(model_dir),
        "--methods",
        "vanilla,pi",
        "--lengths",
        "2W",
        "--json",
        str(out),
    ]
    assert eval_main(argv) == 0
    assert f"vanilla={2 * W} pi={2 * W}" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["settings"]["unit"] == "tokens" and [r["method"] for r in data["results"]] == [
        "vanilla",
        "pi",
    ]
    assert eval_main(argv) == 0
    assert "(2 of 2 cells already there)" in capsys.readouterr().err
