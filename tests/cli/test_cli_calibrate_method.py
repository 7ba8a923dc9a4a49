"""``lampe-calibrate --method`` on a non-LaMPE method (tiny model, short lengths, 3 points), its
profile, resume, and ``lampe-eval --profile`` applying the profile to that method."""

from __future__ import annotations

import contextlib
import io
import json

import huggingface_hub.constants
import pytest
import torch
from calib_support import tiny_model_dir, write_jsonl
from char_tokenizer import char_tokenizer

from lampe_calib.calibration import load_profile
from lampe_calib.cli import calibrate_main, eval_main

W = 32
LENGTHS = (48, 96)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), window=W)


@pytest.fixture(scope="module")
def calibrated(model_dir, tmp_path_factory):
    """One ``--method selfextend`` run: (output directory, printed text)."""
    out = tmp_path_factory.mktemp("out")
    argv = ["--model", str(model_dir), "--out", str(out), "--method", "selfextend", "--points", "3"]
    argv += ["--lengths", ",".join(map(str, LENGTHS)), "--samples", "2"]
    buffer = io.StringIO()  # (module scope: no capsys)
    with contextlib.redirect_stdout(buffer):
        assert calibrate_main(argv) == 0
    return out, buffer.getvalue(), argv


def test_a_method_sweep_writes_its_profile_and_states_the_budget(calibrated, model_dir):
    out, printed, _ = calibrated
    name = f"{model_dir.name}-selfextend"
    assert {p.name for p in out.iterdir()} == {f"{name}.json", f"{name}.db"}
    assert "budget: 3 evaluated points per length" in printed
    assert "trials 8/8" in printed  # 2 vanilla + 2 lengths x 3 group sizes
    profile = load_profile(out / f"{name}.json")
    assert profile.method == "selfextend" and profile.knob["name"] == "group" and profile.knob["points"] == 3
    rows = {row["length"]: row for row in profile.knob["lengths"]}
    assert sorted(rows) == list(LENGTHS)
    for length, row in rows.items():
        assert len(row["values"]) == 3 and row["default"] in row["values"]
        assert row["best"] == row["values"][min(range(3), key=row["ppl"].__getitem__)]
        assert row["best_ppl"] == min(row["ppl"])
        assert profile.knob_values(length) == {"group": row["best"]}
    assert profile.knob_values(1000) == {"group": profile.knob["single"]}
    with pytest.raises(ValueError, match="calibrates method 'selfextend', not LaMPE"):
        profile.to_lampe_config()
    # Written as LaMPE profiles are, and read back equal.
    assert type(profile).from_dict(json.loads((out / f"{name}.json").read_text())) == profile


def test_the_same_command_resumes_without_evaluating(calibrated, capsys):
    _, _, argv = calibrated
    assert calibrate_main(argv) == 0
    assert "trials 0/0" in capsys.readouterr().out


def test_lampe_eval_applies_the_profile_to_its_method(calibrated, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from lampe_calib.evaluation._perplexity import evaluate_perplexity
    from lampe_calib.methods._selfextend import SelfExtendConfig, self_extend

    out, _, _ = calibrated
    path = out / f"{model_dir.name}-selfextend.json"
    profile = load_profile(path)
    texts = ["".join(chr(97 + (i * 7 + k) % 26) for i in range(400)) for k in range(2)]
    data = write_jsonl(tmp_path / "books.jsonl", texts)
    result = tmp_path / "ppl.json"
    argv = ["ppl", "--model", str(model_dir), "--profile", str(path), "--methods", "vanilla,selfextend"]
    argv += ["--lengths", "96", "--data", str(data), "--json", str(result)]
    assert eval_main(argv) == 0
    got = {r["method"]: r["ppl"] for r in json.loads(result.read_text())["results"]}

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = char_tokenizer()
    books = [torch.tensor(tokenizer(t)["input_ids"][:96]) for t in texts]
    group = profile.knob_values(96)["group"]
    config = SelfExtendConfig(
        group=group, neighbor_window=SelfExtendConfig.recommended(W, 96).neighbor_window
    )
    context = None if group == 1 else (lambda: self_extend(model, config))
    want = evaluate_perplexity(model, books, context=context).ppl
    assert got["selfextend"] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "selfextend", "--mappings", "10,20"], "--mappings is LaMPE's"),
        (["--method", "selfextend", "--search", "gp"], "--search is LaMPE's"),
        (["--method", "warp"], "--method must be one of lampe, selfextend"),
        (["--method", "dca", "--points", "3", "--values", "8"], "--points and --values are exclusive"),
        (["--points", "3"], "LaMPE's grid is --mappings"),
        (["--method", "rerope", "--values", "500", "--lengths", "48"], "no --values lie in rerope's window"),
    ],
)
def test_method_option_errors_are_one_line_and_write_nothing(model_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert calibrate_main(["--model", str(model_dir), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
