"""Profiles (lampe_calib/_profiles.py): JSON round trip, every validation error, shipped profiles."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch
from calib_support import REFERENCE_DIR, TINY_W, tiny_llama

from lampe_calib import LampeConfig, SigmoidMapping, apply_lampe
from lampe_calib.calibration import Profile, load_profile, save_profile, shipped_profiles, write_atomic

VALID = {
    "schema_version": 1,
    "model": {"alias": "tiny", "source": "/models/tiny", "revision": None},
    "window": 32,
    "rope": {"theta": 10000.0, "type": "default", "scaling": {}},
    "lampe": {"head": 4, "tail": 2, "mode": "exact", "attention_factor": 1.0},
    "sigmoid": {
        "status": "fitted",
        "message": None,
        "a": 1 / 32,
        "b": -1.0,
        "c": 24.0,
        "c_mode": "fixed",
        "r2": 0.98,
        "ci": {"level": 0.95, "resamples": 100, "a": [0.02, 0.04], "b": [-1.2, -0.8], "c": [24.0, 24.0]},
        "points": [{"length": 64, "m_star": 17.6, "fitted": 17.5, "residual": 0.1}],
        "alternatives": [],
    },
    "curves": [
        {"length": 64, "mappings": [8, 16, 24], "ppl": [30.0, 20.0, 25.0], "books": 2, "tokens": 126},
    ],
    "provenance": {
        "imported": False,
        "dataset": "test",
        "samples": 2,
        "seed": 0,
        "command": "lampe-calibrate",
    },
}


def _with(path: str, value, data=VALID):
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()


def test_round_trip_through_json(tmp_path):
    profile = Profile.from_dict(VALID)
    path = tmp_path / "tiny.json"
    save_profile(profile, path)
    assert json.loads(path.read_text()) == VALID
    loaded = load_profile(path)
    assert loaded == profile and loaded.to_dict() == VALID
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.json"]  # no temporary file left


def test_profile_is_read_only_and_does_not_alias_its_input():
    data = copy.deepcopy(VALID)
    profile = Profile.from_dict(data)
    data["lampe"]["head"] = 99
    assert profile.lampe["head"] == 4
    with pytest.raises(TypeError):
        profile.lampe["head"] = 5


def test_to_lampe_config_and_mapping_length():
    profile = Profile.from_dict(VALID)
    config = profile.to_lampe_config()
    assert config == LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(1 / 32, -1.0, 24.0))
    assert profile.mapping_length(64) == pytest.approx(24 / (1 + math.exp(-1)))


def test_apply_lampe_takes_a_profile():
    model = tiny_llama(vocab_size=128)
    profile = Profile.from_dict(VALID)
    ids = torch.randint(0, 128, (1, 4 * TINY_W), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), apply_lampe(model, profile):
        from_profile = model(ids).logits
    with torch.no_grad(), apply_lampe(model, profile.to_lampe_config()):
        from_config = model(ids).logits
    with torch.no_grad():
        stock = model(ids).logits
    assert torch.equal(from_profile, from_config)
    assert not torch.allclose(from_profile, stock)


def test_a_degenerate_profile_says_so():
    data = _with("sigmoid", {"status": "degenerate", "message": "m* is the smallest swept m at every length"})
    profile = Profile.from_dict(data)
    with pytest.raises(ValueError, match="profile 'tiny' holds no usable m\\(L\\) fit: m\\* is the smallest"):
        profile.to_lampe_config()


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("schema_version", 2, "'schema_version' is 2, newer than this lampe-calib reads"),
        ("schema_version", 0, "'schema_version' must be 1"),
        ("schema_version", _DELETE, "'schema_version' is missing"),
        ("extra", 1, "'extra' is not part of schema version 1"),
        ("model", _DELETE, "'model' is missing"),
        ("model", "tiny", "'model' must be an object"),
        ("model.alias", _DELETE, "'model.alias' is missing"),
        ("model.alias", 3, "'model.alias' must be a string"),
        ("model.source", 3, "'model.source' must be a string"),
        ("model.revision", 3, "'model.revision' must be a string"),
        ("window", 0, "'window' must be an integer >= 1"),
        ("window", "256", "'window' must be an integer >= 1"),
        ("rope.theta", -1.0, "'rope.theta' must be > 0"),
        ("rope.theta", _DELETE, "'rope.theta' is missing"),
        ("rope.type", None, "'rope.type' must be a string"),
        ("rope.scaling", [], "'rope.scaling' must be an object"),
        ("lampe.head", -1, "'lampe.head' must be an integer >= 0"),
        ("lampe.tail", "2", "'lampe.tail' must be an integer >= 0"),
        ("lampe.mode", "round", "'lampe.mode' must be one of"),
        ("lampe.attention_factor", 0, "'lampe.attention_factor' must be > 0"),
        ("lampe.attention_factor", True, "'lampe.attention_factor' must be a finite number"),
        ("sigmoid.status", "maybe", "'sigmoid.status' must be one of"),
        ("sigmoid.a", -0.1, "'sigmoid.a' must be > 0"),
        ("sigmoid.a", float("nan"), "'sigmoid.a' must be a finite number"),
        ("sigmoid.b", "x", "'sigmoid.b' must be a finite number"),
        ("sigmoid.c", 5.0, "'sigmoid.c' must be > lampe.head \\+ lampe.tail = 6"),
        ("sigmoid.c", _DELETE, "'sigmoid.c' is missing"),
        ("sigmoid.c_mode", "auto", "'sigmoid.c_mode' must be one of"),
        ("sigmoid.r2", "good", "'sigmoid.r2' must be a finite number or null"),
        ("sigmoid.ci", [1], "'sigmoid.ci' must be an object"),
        ("sigmoid.ci.a", [1.0], "'sigmoid.ci.a' must be \\[low, high\\]"),
        ("curves", {}, "'curves' must be a list"),
        ("curves.0", 5, "'curves\\[0\\]' must be an object"),
        ("curves.0.length", _DELETE, "'curves\\[0\\].length' is missing"),
        ("curves.0.ppl", [1.0], "'curves\\[0\\].ppl' must be a list as long as mappings \\(3\\)"),
        ("curves.0.books", 0, "'curves\\[0\\].books' must be an integer >= 1"),
        ("provenance", [], "'provenance' must be an object"),
        ("provenance.imported", "yes", "'provenance.imported' must be true or false"),
    ],
)
def test_every_validation_error_names_the_field(tmp_path, path, value, message):
    data = _with(path, value)
    with pytest.raises(ValueError, match=message):
        Profile.from_dict(data)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"^profile {file}: profile field ") as error:
        load_profile(file)
    assert "\n" not in str(error.value)


def test_degenerate_needs_a_message():
    with pytest.raises(ValueError, match="'sigmoid.message' must be a string"):
        Profile.from_dict(_with("sigmoid", {"status": "degenerate", "message": None}))


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="is neither a JSON file nor a shipped profile \\(.*llama3-8b.*\\)"):
        load_profile("no-such-model")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,\n  "model": }')
    with pytest.raises(ValueError, match="not valid JSON \\(line 2, column 12"):
        load_profile(bad)
    with pytest.raises(ValueError, match="'\\(top level\\)' must be an object"):
        bad.write_text("[1, 2]")
        load_profile(bad)


def test_shipped_imported_profiles_reproduce_the_official_values():
    assert {"llama2-7b", "llama3-8b", "llama3.1-8b", "mistral-7b"} <= set(shipped_profiles())
    windows = {"llama2-7b": 4096, "llama3-8b": 8192, "llama3.1-8b": 131072, "mistral-7b": 32768}
    for name, window in windows.items():
        profile = load_profile(name)
        assert profile.window == window and profile.status == "imported"
        assert profile.provenance["imported"] is True
        assert (profile.lampe["head"], profile.lampe["tail"], profile.lampe["mode"]) == (512, 200, "floor")
        assert profile.lampe["attention_factor"] == pytest.approx(1 + 0.1 * math.log(2))
    # Official m(L) (int() of it, as the release truncates; docs/official_code_differences.md).
    assert int(load_profile("llama3-8b").mapping_length(32768)) == 4501
    assert int(load_profile("llama3-8b").mapping_length(8192)) == 1036
    assert int(load_profile("llama2-7b").mapping_length(8192)) == 1283
    assert int(load_profile("mistral-7b").mapping_length(8192)) == 4104
    assert int(load_profile("llama3.1-8b").mapping_length(4096)) == 5672
    assert load_profile("mistral-7b").sigmoid["c"] == 0.75 * 32768


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    write_atomic(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("name", ["llama3-8b", "degenerate", "fitted"])
def test_every_kind_of_profile_plots(tmp_path, name):
    from lampe_calib.calibration._plots import plot_profile, render_profile

    if name == "degenerate":
        profile = Profile.from_dict(_with("sigmoid", {"status": "degenerate", "message": "too few lengths"}))
    elif name == "fitted":
        profile = Profile.from_dict(VALID)
    else:
        profile = load_profile(name)
    assert render_profile(profile, dpi=40)[:8] == b"\x89PNG\r\n\x1a\n"
    plot_profile(profile, tmp_path / "figure.png", dpi=40)
    assert (tmp_path / "figure.png").stat().st_size > 1000


TEST_SPLIT = REFERENCE_DIR.parents[2].parent / "shared" / "data" / "pg19-mini" / "test.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not (REFERENCE_DIR / "model.safetensors").is_file(), reason="reference model not built")
@pytest.mark.skipif(not TEST_SPLIT.is_file(), reason="the pg19-mini test split is not beside the checkout")
def test_reference_profile_beats_vanilla_and_linear_interpolation():
    """Issue 5: the shipped, fitted reference profile under apply_lampe beats vanilla and PI on
    the test split at 2W, 4W and 8W (here on 4 books; the closing note has 16)."""
    from lampe_calib.evaluation import load_books
    from lampe_calib.evaluation._perplexity import evaluate_perplexity
    from lampe_calib.methods._registry import method_context
    from lampe_calib.models import load_model, model_info

    model, tokenizer = load_model("reference")
    w = model_info(model).window
    profile = load_profile("reference")
    assert profile.status == "fitted" and profile.window == w
    books = load_books(TEST_SPLIT, tokenizer, max_length=8 * w, samples=4, seed=0)
    for length in (2 * w, 4 * w, 8 * w):
        tokens = books.at_length(length).tokens
        ppl = {
            name: evaluate_perplexity(
                model,
                tokens,
                lambda n=name, n_tokens=length: method_context(n, model, w, n_tokens, profile),
                batch_size=4,
            ).ppl
            for name in ("vanilla", "pi")
        }
        lampe = evaluate_perplexity(model, tokens, lambda: apply_lampe(model, profile), batch_size=4).ppl
        assert lampe < ppl["vanilla"] and lampe < ppl["pi"], (length, lampe, ppl)


def test_sections_are_typed_values_read_once():
    from lampe_calib.calibration._profile_sections import LampeSection, SigmoidSection

    profile = Profile.from_dict(VALID)
    assert profile.lampe_section == LampeSection(
        head=4, tail=2, mode="exact", attention_factor=1.0, base=None
    )
    assert profile.sigmoid_section == SigmoidSection(
        "fitted", None, SigmoidMapping(a=1 / 32, b=-1.0, c=24.0), "fixed", "argmin"
    )
    config = profile.to_lampe_config()
    assert config is profile.to_lampe_config()  # built once, when the profile was read
    assert config == LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(a=1 / 32, b=-1.0, c=24.0))
    rescaled = Profile.from_dict(_with("lampe.base", {"type": "yarn", "factor": 2}))
    assert rescaled.lampe_section.base is not None and rescaled.lampe_section.base.type == "yarn"
    with pytest.raises(ValueError, match="'lampe.base.type' must be one of \\('yarn', 'ntk'\\)"):
        Profile.from_dict(_with("lampe.base", {"type": "stock", "factor": 2}))


def test_a_config_error_is_named_by_its_profile_field():
    from lampe_calib.calibration._profile_fields import as_config_errors

    with pytest.raises(
        ValueError, match="^profile field 'sigmoid.a' must be > 0 \\(m grows with L\\), got -1$"
    ):
        with as_config_errors("sigmoid"):
            SigmoidMapping(a=-1, b=0.0, c=1.0)
    with pytest.raises(ValueError, match="^profile field 'lampe.head' must be an integer >= 0, got -1$"):
        with as_config_errors("lampe"):
            LampeConfig(head=-1, tail=2, mapping_length=10)
