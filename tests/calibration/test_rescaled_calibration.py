"""Calibrating m on a rescaled rotary (``--base yarn|ntk``): every point runs on the rescaled
base, m may use s·W positions, and the profile drives ``lampe-yarn`` / ``lampe-ntk``."""

from __future__ import annotations

import copy

import pytest
import torch
from calib_support import TINY_W, tiny_llama
from char_tokenizer import char_tokenizer
from test_profiles import VALID

from lampe_calib import LampeConfig
from lampe_calib.calibration import Profile, calibrate_model, default_spec
from lampe_calib.calibration._calibrate import check_spec_window, profile_name
from lampe_calib.calibration.sweep import SweepSpec, run_sweep
from lampe_calib.evaluation import evaluate_perplexity, load_books
from lampe_calib.methods import RESCALED_BASE_FACTOR, method_context, rescaled_base
from lampe_calib.models import model_info

LENGTH = 96  # 3·W: past the rescaled window s·W = 64


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=len(char_tokenizer()))


@pytest.fixture(scope="module")
def books():
    return load_books("pg19", char_tokenizer(), max_length=LENGTH, samples=2, seed=0, online=False)


@pytest.mark.parametrize("base", ["yarn", "ntk"])
def test_every_point_runs_on_the_rescaled_base(tmp_path, model, books, base):
    spec = SweepSpec(lengths=(LENGTH,), mappings=(40,), heads=(4,), tails=(2,), base=base)
    result = run_sweep(model, books, spec, f"sqlite:///{tmp_path / 's.db'}", "tiny")
    tokens = books.at_length(LENGTH).tokens
    vanilla = evaluate_perplexity(model, tokens, lambda: rescaled_base(model, TINY_W, base))
    lampe = evaluate_perplexity(
        model, tokens, lambda: rescaled_base(model, TINY_W, base, LampeConfig(4, 2, mapping_length=40.0))
    )
    stock = evaluate_perplexity(model, tokens)
    assert result.stock(LENGTH).result.nll == pytest.approx(vanilla.nll, rel=1e-6)
    (point,) = result.select(LENGTH, 4, 2, 1.0)
    assert point.result.nll == pytest.approx(lampe.nll, rel=1e-6)
    assert abs(vanilla.ppl - stock.ppl) > 1e-3  # the base really is another rotary


def test_a_rescaled_base_doubles_the_mapping_range():
    assert RESCALED_BASE_FACTOR == 2
    spec = SweepSpec(lengths=(LENGTH,), mappings=(40, 4 * TINY_W), heads=(4,), tails=(2,), base="yarn")
    check_spec_window(spec, TINY_W)  # 2·s·W = 128
    too_far = SweepSpec(lengths=(LENGTH,), mappings=(40, 4 * TINY_W + 1), heads=(4,), tails=(2,), base="yarn")
    with pytest.raises(ValueError, match=r"mappings must be <= 2·s·W = 128"):
        check_spec_window(too_far, TINY_W)
    stock = SweepSpec(lengths=(LENGTH,), mappings=(40, 4 * TINY_W), heads=(4,), tails=(2,))
    with pytest.raises(ValueError, match=r"mappings must be <= 2·W = 64"):
        check_spec_window(stock, TINY_W)
    assert default_spec(TINY_W, base="ntk").mappings[-1] == round(1.25 * 2 * TINY_W)
    with pytest.raises(ValueError, match="base must be one of"):
        SweepSpec(lengths=(LENGTH,), mappings=(40,), heads=(4,), tails=(2,), base="pi")


def test_the_profile_records_its_base_and_drives_lampe_yarn(tmp_path, model, books):
    spec = SweepSpec(lengths=(48, 72, LENGTH), mappings=(16, 40), heads=(4,), tails=(2,), base="yarn")
    run = calibrate_model(
        model, char_tokenizer(), storage=f"sqlite:///{tmp_path / 's.db'}", spec=spec, books=books, resamples=0
    )
    profile = run.profile
    assert profile.lampe["base"] == {"type": "yarn", "factor": 2}
    assert profile_name(model_info(model), "yarn").endswith("-yarn")
    assert Profile.from_dict(profile.to_dict()) == profile
    # A random tiny model gives no usable fit; the methods are checked on a fitted sigmoid.
    profile = Profile.from_dict({**profile.to_dict(), "sigmoid": VALID["sigmoid"]})
    with pytest.raises(ValueError, match="calibrated on the yarn base: use method 'lampe-yarn'"):
        method_context("lampe", model, TINY_W, LENGTH, profile)
    with pytest.raises(ValueError, match="'lampe-ntk' cannot use a profile calibrated on the yarn base"):
        method_context("lampe-ntk", model, TINY_W, LENGTH, profile)
    want = profile.to_lampe_config().mapping_length_for(LENGTH)
    with method_context("lampe-yarn", model, TINY_W, LENGTH, profile) as session:
        assert session.config.mapping_length_for(LENGTH) == pytest.approx(want)
        ids = torch.randint(0, 50, (1, LENGTH))
        got = model(ids).logits
    with rescaled_base(model, TINY_W, "yarn", profile.to_lampe_config()):
        assert torch.equal(model(ids).logits, got)


@pytest.mark.parametrize(
    "base, message",
    [
        ({"type": "pi", "factor": 2}, r"lampe.base.type"),
        ({"type": "yarn", "factor": 1}, r"lampe.base.factor"),
        ({"factor": 2}, r"lampe.base.type' is missing"),
    ],
)
def test_profile_base_is_validated(base, message):
    data = copy.deepcopy(VALID)
    data["lampe"]["base"] = base
    with pytest.raises(ValueError, match=message):
        Profile.from_dict(data)
