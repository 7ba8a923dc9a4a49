"""The registry's entries (``METHOD_ENTRIES``): what each method declares is what runs, the
names the command lines offer come from them, and LaMPE on a rescaled base is the composition
of the base's entry and LaMPE's."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_WINDOW, tiny_model
from dense_reference import dense_lampe, pe_matrix

from lampe_calib import LampeConfig, SigmoidMapping
from lampe_calib.methods import (
    BASES,
    FIXED_MAPPING_FRACTION,
    METHOD_ENTRIES,
    METHODS,
    RESCALED_BASE_FACTOR,
    STOCK,
    TUNABLE,
    Method,
    ProfileUse,
    calibrated_method_names,
    knob_method_names,
    method_context,
    method_names,
    on_base,
    profile_method_names,
    rescaled_base,
)
from lampe_calib.methods._registry import lampe_knobs

TOL = 1e-4  # fp32 through a 2-layer model; the engine's contract
W = TINY_WINDOW
ENTRY = {entry.name: entry for entry in METHOD_ENTRIES}
PROFILE = LampeConfig(head=4, tail=2, mapping_length=24, attention_factor=1.1)


def _ids(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 96, (1, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("name", [e.name for e in METHOD_ENTRIES if e.tuning and e.tuning.build])
@pytest.mark.parametrize("length", [2 * W, 5 * W])
def test_every_knob_default_is_what_the_method_runs(name, length):
    """Building a method with every one of its knobs set to its declared default gives the
    logits of the method's own factory, bit for bit."""
    model, ids = tiny_model("llama"), _ids(length)
    tuning = ENTRY[name].tuning
    with METHODS[name](model, W, length, None):
        want = _logits(model, ids)
    defaults = {knob.name: knob.default for knob in tuning.knobs(W, length)}
    with tuning.build(model, W, length, defaults):
        got = _logits(model, ids)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(want, _logits(model, ids))  # the method acted at this length


def test_lampe_knob_defaults_are_what_lampe_fixed_runs():
    window, length = 64, 256
    mapping, head, tail = lampe_knobs(window, length)
    profile = LampeConfig(
        head=head.default, tail=tail.default, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=40.0)
    )
    model = tiny_model("llama")
    with method_context("lampe-fixed", model, window, length, profile) as session:
        assert session.config.mapping_length == mapping.default == FIXED_MAPPING_FRACTION * window
        assert (session.config.head, session.config.tail) == (head.default, tail.default)


def test_the_command_lines_names_come_from_the_entries():
    names = tuple(entry.name for entry in METHOD_ENTRIES)
    assert method_names() == names == tuple(METHODS)
    assert all(METHODS[e.name] is e.build for e in METHOD_ENTRIES)
    assert TUNABLE == {e.name: e.tuning for e in METHOD_ENTRIES if e.tuning is not None}
    assert set(knob_method_names()) == {n for n, t in TUNABLE.items() if t.build is not None}
    assert calibrated_method_names() == ("lampe", *knob_method_names())
    assert profile_method_names() == ("lampe-fixed", "lampe", "lampe-yarn", "lampe-ntk")
    assert BASES == (STOCK, "yarn", "ntk")
    for base in BASES[1:]:
        assert ENTRY[base].rescaling is not None  # each base is a rescaling entry of the table
    assert all(e.description and "\n" not in e.description for e in METHOD_ENTRIES)
    with pytest.raises(ValueError, match="one-line description"):
        Method("x", "two\nlines", METHODS["vanilla"])


@pytest.mark.parametrize("name", [e.name for e in METHOD_ENTRIES if e.profile is ProfileUse.NONE])
def test_a_method_that_reads_no_profile_ignores_a_lampe_profile(name):
    model, length = tiny_model("llama"), 3 * W
    ids = _ids(length, seed=1)
    with method_context(name, model, W, length, None):
        want = _logits(model, ids)
    with method_context(name, model, W, length, PROFILE):
        torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)


def test_a_method_that_requires_a_profile_refuses_none():
    model = tiny_model("llama")
    for entry in METHOD_ENTRIES:
        if entry.profile is ProfileUse.REQUIRED:
            with pytest.raises(ValueError, match="needs a calibrated profile"):
                method_context(entry.name, model, W, 4 * W, None)


@pytest.mark.parametrize("base", BASES[1:])
def test_rescaled_lampe_is_the_composition_of_its_base_and_lampe(base):
    entry = ENTRY[f"lampe-{base}"]
    assert (entry.base, entry.profile) == (base, ProfileUse.OPTIONAL)
    model, length = tiny_model("llama"), 4 * W
    ids = _ids(length, seed=2)
    mapping = FIXED_MAPPING_FRACTION * RESCALED_BASE_FACTOR * W
    with rescaled_base(model, W, base, LampeConfig(4, 2, mapping_length=mapping, attention_factor=1.1)):
        want = _logits(model, ids)
    with method_context(entry.name, model, W, length, PROFILE):
        torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)


def test_lampe_composes_with_another_rescaling_entry():
    """``on_base`` with PI's entry (not in the table) is LaMPE on the linearly interpolated rotary
    of factor s, checked against a model built with that rotary and dense LaMPE positions."""
    composed = on_base(ENTRY["pi"], ENTRY["lampe"])
    assert (composed.name, composed.base) == ("lampe-pi", "pi")
    model, length = tiny_model("llama"), 4 * W
    ids = _ids(length, seed=3)
    mapping = FIXED_MAPPING_FRACTION * RESCALED_BASE_FACTOR * W
    config = copy.deepcopy(model.config)
    theta = config.rope_parameters["rope_theta"]
    config.rope_parameters = {
        "rope_type": "linear",
        "rope_theta": theta,
        "factor": float(RESCALED_BASE_FACTOR),
    }
    twin = type(model)(config).eval()
    twin.load_state_dict(model.state_dict())
    with dense_lampe(twin, pe_matrix(length, mapping, PROFILE.head, PROFILE.tail), PROFILE.attention_factor):
        want = _logits(twin, ids)
    with composed.build(model, W, length, PROFILE) as session:
        got = _logits(model, ids)
        assert session.config.mapping_length == mapping
    assert (got - want).abs().max().item() <= TOL
    with composed.build(model, W, W, PROFILE):  # the stock model within the window
        torch.testing.assert_close(_logits(model, ids[:, :W]), _logits(tiny_model("llama"), ids[:, :W]))
    with pytest.raises(ValueError, match="cannot run on 'selfextend'"):
        on_base(ENTRY["selfextend"], ENTRY["lampe"])
