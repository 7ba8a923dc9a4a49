"""Bad input wherever a user types something: flags of ``lampe-calibrate`` and ``lampe-eval``, data
files, profiles, model paths, devices, storages. Each case runs the real entry point and must
exit with code 2 after one line on stderr that names what is wrong and what would be right, with
no traceback, leaving the output directory empty."""

from __future__ import annotations

import json
import re

import huggingface_hub.constants
import pytest
import torch
from calib_support import SAMPLE, minimal_profile, tiny_model_dir, write_jsonl

from lampe_calib.cli import calibrate_main, eval_main


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every input file the cases refer to, by name."""
    root = tmp_path_factory.mktemp("inputs")
    model = tiny_model_dir(root / "tiny")
    (root / "no-config").mkdir()
    corrupt = tiny_model_dir(root / "corrupt")
    (corrupt / "config.json").write_text("{not json")
    truncated = tiny_model_dir(root / "truncated")
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (root / "latin1.jsonl").write_bytes(b'{"text": "a book"}\n{"text": "caf\xe9 au lait"}\n')
    (root / "numeric.jsonl").write_text('{"text": "a book"}\n{"text": 42}\n')
    (root / "weights.bin").write_bytes(b"\0" * 16)
    (root / "books.txt").write_text("plain text\n")
    (root / "broken.jsonl").write_text('{"text": "a book"}\n{"text": \n')
    write_jsonl(root / "no-text.jsonl", ["x", "y"])
    (root / "no-text.jsonl").write_text('{"body": "a book"}\n{"body": "another"}\n')
    (root / "empty.jsonl").write_text("")
    write_jsonl(root / "short.jsonl", ["a short book", "another short one"])
    (root / "empty-dir").mkdir()
    (root / "a-file").write_text("x")
    (root / "bad.json").write_text('{"schema_version": 1,')
    profile = minimal_profile(32)
    (root / "negative-a.json").write_text(
        json.dumps({**profile, "sigmoid": {**profile["sigmoid"], "a": -1.0}})
    )
    (root / "window-64.json").write_text(json.dumps({**profile, "window": 64}))
    return {"model": str(model), "root": str(root), **{p.name: str(p) for p in root.iterdir()}}


# (arguments after the model; the message that must appear, as a regex)
CALIBRATE = [
    (["--lengths", "1x"], r"--lengths: '1x' is not a token count \(e.g. 512, 2W, 8K\)"),
    (["--lengths", "0.3W"], r"--lengths: '0.3W' is not a whole number of tokens \(9.6\)"),
    (["--lengths", "1"], r"lengths must hold integers >= 2, got 1"),
    (["--mappings", "5"], r"mappings must all be >= head \+ tail \+ 1 = 7"),
    (["--lengths", "3"], r"lengths must be > head \+ tail = 6 \(valid: 7 and up\), got 3"),
    (["--lengths", "6"], r"lengths must be > head \+ tail = 6 \(valid: 7 and up\), got 6"),
    (["--head", "32"], r"head sizes must be < the window W = 32, got 32"),
    (["--tail", "1W"], r"tail sizes must be < the window W = 32, got 32"),
    (["--mappings", "8,65"], r"mappings must be <= 2·W = 64 \(valid: 7 \.\. 64\), got 65"),
    (["--base", "yarn", "--mappings", "8,129"], r"mappings must be <= 2·s·W = 128 \(valid: 7 \.\. 128\)"),
    (["--base", "pi"], r"argument --base: invalid choice: 'pi'"),
    (["--head", "-1"], r"--head: '-1' is not a token count"),
    (["--samples", "0"], r"--samples must be >= 1, got 0"),
    (["--samples", "many"], r"argument --samples: invalid int value: 'many' \(see lampe-calibrate --help\)"),
    (["--frobnicate"], r"unrecognized arguments: --frobnicate"),
    (["--mode", "round"], r"argument --mode: invalid choice: 'round' \(choose from '?exact'?, '?floor'?\)"),
    (["--dtype", "float8"], r"argument --dtype: invalid choice: 'float8'"),
    (["--device", "tpu"], r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["--device", "cuda:99"], r"device 'cuda:99' requested but (CUDA is not available|only \d+ CUDA device)"),
    (["--evaluations", "0"], r"--evaluations must be >= 1"),
    (["--bootstrap", "-1"], r"--bootstrap must be >= 0"),
    (["--batch-tokens", "0"], r"--batch-tokens must be >= 1"),
    (["--heartbeat", "0"], r"--heartbeat must be >= 1"),
    (["--attention-factor", "0"], r"attention_factors must hold finite numbers > 0, got 0.0"),
    (["--attention-factor", "nan"], r"attention_factors must hold finite numbers > 0, got nan"),
    (["--attention-factor", "x"], r"--attention-factor: expected numbers, got 'x'"),
    (["--study", "a:b"], r"--study must be a non-empty name without ':'"),
    (
        ["--data", "{root}/missing.jsonl"],
        r"--data '.*missing.jsonl': not 'pg19', 'pg19:SPLIT', an existing JSONL",
    ),
    (["--data", "{books.txt}"], r"--data '.*books.txt': expected a .jsonl or .parquet file"),
    (
        ["--data", "{broken.jsonl}"],
        r"--data: .*broken.jsonl line 2 is not valid JSON \(Expecting value\); each line must be one",
    ),
    (["--data", "{no-text.jsonl}"], r"--data: .*no-text.jsonl has no 'text' field \(fields: \['body'\]\)"),
    (["--data", "{empty.jsonl}"], r"--data: .*empty.jsonl holds no books"),
    (["--data", "{empty-dir}"], r"--data '.*empty-dir': the directory holds no .jsonl or .parquet file"),
    (
        ["--data", "pg19:nosuch"],
        r"--data: PG-19 split must be one of \('train', 'validation', 'test'\), got 'nosuch'",
    ),
    (["--data", "{short.jsonl}", "--samples", "2"], r"none of the 2 selected books has 64 tokens"),
    (["--data", "{SAMPLE}", "--samples", "11"], r"samples=11 but the data holds only 10 books"),
    (
        ["--storage", "sweep.db"],
        r"--storage must be a database URL such as sqlite:///sweep.db, got 'sweep.db'",
    ),
    (
        ["--storage", "sqlite:////no/such/dir/x.db"],
        r"--storage sqlite:////no/such/dir/x.db: directory '/no/such/dir' does not exist",
    ),
    (
        ["--storage", "mongodb://host/db"],
        r"--storage mongodb://host/db: cannot open: unsupported database 'mongodb'",
    ),
    (
        ["--storage", "postgresql://u:secret@127.0.0.1:1/db"],
        r"--storage postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/db: cannot open: .*(refused|connect)",
    ),
    (["--out", "{a-file}"], r"--out '.*a-file' exists and is not a directory"),
    (["--out", "{a-file}/sub"], r"--out '.*a-file/sub': '.*a-file' is a file, not a directory"),
]
MODELS = [
    (
        "{root}/no-such-model",
        r"name_or_path '.*no-such-model' is neither an alias, a hub id nor an existing path",
    ),
    ("no-such-alias", r"unknown model alias 'no-such-alias'; known aliases: .*reference"),
    ("{no-config}", r"directory '.*no-config' has no config.json; it is not a transformers model"),
    (
        "{corrupt}",
        r"name_or_path '.*corrupt': cannot load it as a transformers model: .*config.json' is not a valid",
    ),
    ("{weights.bin}", r"name_or_path '.*weights.bin' is a file but not a .gguf file; pass its directory"),
    (
        "{truncated}",
        r"name_or_path '.*truncated': its .safetensors weights cannot be read \(.*\); "
        r"the file is truncated or corrupt",
    ),
]
EVAL = [
    (["ppl", "--methods", "vanilla,rope"], r"--methods: unknown method 'rope'; known: vanilla, pi"),
    (["ppl", "--lengths", "1W,x"], r"--lengths: 'x' is not a token count \(e.g. 512, 2W, 8K\)"),
    (["ppl", "--lengths", "0.3W"], r"--lengths: '0.3W' is not a whole number of tokens"),
    (["ppl", "--samples", "0"], r"--samples must be >= 1, got 0"),
    (["ppl", "--samples", "11"], r"--samples 11\): samples=11 but the data holds only 10 books"),
    (["ppl", "--seed", "x"], r"argument --seed: invalid int value: 'x' \(see lampe-eval ppl --help\)"),
    (["ppl", "--methods", "lampe"], r"--profile: method 'lampe' needs a calibrated profile"),
    (
        ["ppl", "--methods", "lampe", "--profile", "{root}/nope.json"],
        r"--profile '.*nope.json': profile .* is neither a JSON file nor a shipped profile",
    ),
    (
        ["ppl", "--methods", "lampe", "--profile", "{bad.json}"],
        r"--profile '.*bad.json': profile .*: not valid JSON \(line 1, column 22",
    ),
    (
        ["ppl", "--methods", "lampe", "--profile", "{negative-a.json}"],
        r"profile field 'sigmoid.a' must be > 0 \(m grows with L\), got -1.0",
    ),
    (
        ["ppl", "--methods", "lampe", "--profile", "{window-64.json}"],
        r"--profile '.*window-64.json': profile 'tiny' was fitted on tiny \(.*W 64.*\), this model is tiny "
        r"\(.*W 32.*\): window 64 vs 32",
    ),
    (
        ["ppl", "--json", "{root}/nowhere/out.json"],
        r"--json '.*nowhere/out.json': directory '.*nowhere' does not exist",
    ),
    (["ppl", "--json", "{root}"], r"--json '.*': is a directory; give a file name such as results.json"),
    (["ppl", "--json", "/proc/results.json"], r"--json '/proc/results.json': cannot write in '/proc'"),
    (["ppl", "--json", "{bad.json}"], r"--json '.*bad.json': exists but is not a lampe-eval results file"),
    (
        ["ppl", "--json", "{window-64.json}"],
        r"--json '.*window-64.json': exists but records no settings .*; give another file",
    ),
    (["ppl", "--reference", "pi"], r"--reference 'pi' is not one of --methods \(vanilla\)"),
    (["ppl", "--data", "{no-text.jsonl}"], r"--data: .*no-text.jsonl has no 'text' field"),
    (
        ["ppl", "--data", "{latin1.jsonl}"],
        r"--data: .*latin1.jsonl is not UTF-8 text \(byte 0xe9 on line 2\)",
    ),
    (
        ["ppl", "--data", "{numeric.jsonl}"],
        r"--data: .*numeric.jsonl line 2: its 'text' is int 42, not a string",
    ),
    (["ppl", "--data", "code:{root}/nope"], r"--data 'code:.*nope': code:DIR needs an existing directory"),
    (["ppl", "--data", "code:{empty-dir}"], r"--data 'code:.*empty-dir': the directory holds no .py file"),
    (["ppl", "--device", "tpu"], r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["ppl", "--dtype", "float8"], r"dtype must be one of \['bfloat16', 'float16', 'float32'\]"),
    (["passkey", "--depths", "0,2"], r"--depths '0,2': each depth must be in \[0, 1\]"),
    (["passkey", "--new-tokens", "0"], r"--new-tokens must be >= 1, got 0"),
    (["passkey", "--lengths", "2W"], r"--lengths 64: "),
    (
        ["ruler", "--tasks", "niah_single,qa"],
        r"--tasks: unknown task 'qa'; known: niah_single, niah_multikey",
    ),
    (["ruler", "--new-tokens", "0"], r"--new-tokens must be >= 1, got 0"),
    (["ruler", "--samples", "0"], r"--samples must be >= 1, got 0"),
    (["ruler", "--lengths", "1W"], r"--lengths 32: niah_single: length 16 is too short for this task"),
    (["ruler", "--json", "{root}"], r"--json '.*': is a directory"),
    (
        ["bleu"],
        r"argument command: invalid choice: 'bleu' \(choose from '?ppl'?, '?passkey'?, '?ruler'?\)",
    ),
]


def _fill(values: list[str], files: dict) -> list[str]:
    """``{name}`` -> the path of input file ``name`` (``{SAMPLE}``: the shipped PG-19 sample)."""
    paths = {**files, "SAMPLE": str(SAMPLE)}
    return [re.sub(r"\{([^}]+)\}", lambda m: paths[m.group(1)], v) for v in values]


def _check(code: int, err: str, prog: str, message: str, out) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line: no traceback, no warning
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert re.search(message, lines[0]), f"{message!r} not in {lines[0]!r}"
    assert "Traceback" not in err and "secret" not in err
    assert list(out.iterdir()) == [], "something was written"


@pytest.mark.parametrize("extra, message", CALIBRATE, ids=[" ".join(a) for a, _ in CALIBRATE])
def test_lampe_calibrate(extra, message, files, tmp_path, capsys):
    if "cuda:99" in extra and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    out = tmp_path / "out"
    if "--out" not in extra:  # else the case's own --out counts (argparse keeps the last)
        out.mkdir()
    argv = ["--model", files["model"], "--out", str(out), "--head", "4", "--tail", "2", "--lengths", "64"]
    argv += ["--no-fit", "--samples", "2", "--data", str(SAMPLE), "--bootstrap", "0", *_fill(extra, files)]
    _check(
        calibrate_main(argv),
        capsys.readouterr().err,
        "lampe-calibrate",
        message,
        tmp_path / "out" if out.exists() else tmp_path,
    )


def test_lampe_calibrate_without_model(tmp_path, capsys):
    code = calibrate_main(["--out", str(tmp_path / "o"), "--lengths", "64"])
    _check(
        code,
        capsys.readouterr().err,
        "lampe-calibrate",
        r"the following arguments are required: --model",
        tmp_path,
    )


@pytest.mark.parametrize("model, message", MODELS, ids=[m for m, _ in MODELS])
@pytest.mark.parametrize("prog", ["lampe-calibrate", "lampe-eval"])
def test_model_paths(prog, model, message, files, tmp_path, capsys):
    (model,) = _fill([model], files)
    if prog == "lampe-calibrate":
        code = calibrate_main(
            ["--model", model, "--out", str(tmp_path / "out"), "--lengths", "64", "--no-fit"]
        )
    else:
        argv = ["ppl", "--model", model, "--methods", "vanilla", "--lengths", "64", "--data", str(SAMPLE)]
        code = eval_main([*argv, "--json", str(tmp_path / "out.json")])
    _check(code, capsys.readouterr().err, prog, message, tmp_path)


@pytest.mark.parametrize("extra, message", EVAL, ids=[" ".join(a) for a, _ in EVAL])
def test_lampe_eval(extra, message, files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    command, *rest = _fill(extra, files)
    argv = [command, "--model", files["model"], "--methods", "vanilla", "--lengths", "1W", "--samples", "2"]
    if command == "ppl":
        argv += ["--data", str(SAMPLE)]
    argv += ["--json", str(out / "results.json"), *rest]
    _check(eval_main(argv), capsys.readouterr().err, "lampe-eval", message, out)


def test_a_refused_run_leaves_an_existing_profile_and_figure(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    name = "tiny"
    before = {f"{name}.json": b'{"old": true}', f"{name}.png": b"old figure"}
    for file, data in before.items():
        (out / file).write_bytes(data)
    argv = [
        "--model",
        files["model"],
        "--out",
        str(out),
        "--head",
        "4",
        "--tail",
        "2",
        "--lengths",
        "3",
        "--no-fit",
    ]
    assert calibrate_main([*argv, "--data", str(SAMPLE), "--samples", "2"]) == 2
    assert "lengths must be > head + tail" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_unwritable_datasets_cache_is_not_blamed_on_the_data(files, tmp_path, capsys, monkeypatch):
    """A read-only HOME: ``datasets`` cannot write its cache (``HF_DATASETS_CACHE``, under HOME by
    default); the line says so and how to fix it, and does not name the data file."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", f"{files['a-file']}/cache")
    out = tmp_path / "out"
    out.mkdir()
    argv = ["ppl", "--model", files["model"], "--methods", "vanilla", "--lengths", "1W", "--samples", "2"]
    code = eval_main([*argv, "--data", str(SAMPLE), "--json", str(out / "results.json")])
    message = (
        r"the datasets cache '.*a-file/cache' cannot be written \(.*\): set HF_DATASETS_CACHE \(or HF_HOME\)"
    )
    err = capsys.readouterr().err
    _check(code, err, "lampe-eval", message, out)
    assert "validation.jsonl" not in err


@pytest.mark.parametrize("offline", [True, False])
def test_hub_model_without_weights_fails_fast_with_the_fix(offline, tmp_path, capsys, monkeypatch):
    """``--model llama3-8b`` with no local weights: one line saying what to do, at once (no hub
    retries: offline mode, or one connection probe that finds no network)."""
    import time

    from lampe_calib.evaluation import _sources

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(_sources, "hub_reachable", lambda timeout=3.0: False)
    (tmp_path / "out").mkdir()
    started = time.monotonic()
    code = eval_main(["ppl", "--model", "llama3-8b", "--json", str(tmp_path / "out" / "r.json")])
    assert time.monotonic() - started < 10
    reason = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
    message = (
        rf"the weights of 'meta-llama/Meta-Llama-3-8B' are not in the local Hugging Face cache and {reason}: "
        r"pass a local model directory instead .*gated repositories need a token: "
        r"huggingface-cli login or HF_TOKEN"
    )
    if not offline:
        message += r".*; HF_HUB_OFFLINE=1 skips the hub at once"
    _check(code, capsys.readouterr().err, "lampe-eval", message, tmp_path / "out")
