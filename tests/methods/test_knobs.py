"""Each method's tunable knobs: ranges, defaults equal to what the method runs today, building
with chosen values, and a profile of a method applied by ``method_context``."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_WINDOW, tiny_model

from lampe_calib.methods import FIXED_MAPPING_FRACTION, METHODS, method_context
from lampe_calib.methods._dca import DualChunkConfig, dual_chunk_attention
from lampe_calib.methods._knobs import Knob
from lampe_calib.methods._rerope import ReRopeConfig
from lampe_calib.methods._selfextend import SelfExtendConfig, self_extend
from lampe_calib.methods._string import StringConfig
from lampe_calib.methods._tuning import TUNABLE, knob_values, tuned_context

W = TINY_WINDOW
TUNED = [name for name, t in TUNABLE.items() if t.build is not None]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("window, length", [(256, 128), (256, 1024), (4096, 16384), (8192, 12288)])
def test_defaults_are_the_settings_each_method_uses_today(window, length):
    knobs = {name: {k.name: k for k in TUNABLE[name].knobs(window, length)} for name in TUNABLE}
    se = SelfExtendConfig.recommended(window, length)
    assert (knobs["selfextend"]["group"].default, knobs["selfextend"]["neighbor_window"].default) == (
        se.group,
        se.neighbor_window,
    )
    dca = DualChunkConfig.recommended(window)
    assert (knobs["dca"]["chunk_size"].default, knobs["dca"]["local_window"].default) == (
        dca.chunk_size,
        dca.local_window,
    )
    st = StringConfig.recommended(window, length)
    assert (knobs["string"]["shifted_offset"].default, knobs["string"]["local_window"].default) == (
        st.shifted_offset,
        st.local_window,
    )
    assert knobs["rerope"]["window"].default == ReRopeConfig.recommended(window).window
    for name in ("yarn", "ntk"):
        assert knobs[name]["factor"].default == max(1.0, length / window)
    assert knobs["lampe"]["mapping_length"].default == round(FIXED_MAPPING_FRACTION * window)
    assert [k.name for k in TUNABLE["lampe"].knobs(window, length)] == ["mapping_length", "head", "tail"]
    for name, by_name in knobs.items():
        for knob in by_name.values():
            assert knob.low <= knob.default <= knob.high, (name, knob)
            assert knob.low < knob.high, (name, knob)  # something to search
            grid = knob.grid(5)
            assert knob.default in grid and min(grid) == knob.low and max(grid) == knob.high
            assert all(knob.check(v) == v for v in grid)
    # The main knob comes first.
    assert [TUNABLE[n].knobs(window, length)[0].name for n in TUNED] == [
        "group",
        "chunk_size",
        "shifted_offset",
        "window",
        "factor",
        "factor",
    ]


def test_knob_validation_and_grid():
    knob = Knob("w", 1, 64, 16, True, True, "a window")
    assert knob.grid(4) == (1, 8, 16, 64) and knob.grid(1) == (16,) and knob.grid(2) == (1, 16)
    assert Knob("g", 1, 3, 1, True, False, "").grid(8) == (1, 2, 3)  # an integer range runs out
    assert Knob("s", 1.0, 8.0, 4.0, False, True, "").grid(5) == pytest.approx((1, 2, 2**1.5, 4, 8))
    with pytest.raises(ValueError, match="must lie in"):
        knob.check(65)
    with pytest.raises(ValueError, match="must be an integer"):
        knob.check(2.5)
    with pytest.raises(ValueError, match="default 80 must lie in"):
        Knob("w", 1, 64, 80, True, True, "")
    with pytest.raises(ValueError, match="log range needs low > 0"):
        Knob("w", 0, 64, 8, True, True, "")


@pytest.mark.parametrize("name", TUNED)
@pytest.mark.parametrize("length", [3 * W, 4 * W])
def test_building_with_the_defaults_is_the_registry_method(name, length):
    model = tiny_model("llama")
    ids = torch.randint(0, 96, (1, length), generator=torch.Generator().manual_seed(0))
    with METHODS[name](model, W, length, None):
        want = _logits(model, ids)
    with tuned_context(name, model, W, length, {}):
        got = _logits(model, ids)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    main = TUNABLE[name].knobs(W, length)[0]
    with tuned_context(name, model, W, length, {main.name: main.default}):
        torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)


def test_a_chosen_knob_value_builds_that_configuration():
    model, length = tiny_model("llama"), 4 * W
    ids = torch.randint(0, 96, (1, length), generator=torch.Generator().manual_seed(1))
    config = SelfExtendConfig(
        group=2, neighbor_window=SelfExtendConfig.recommended(W, length).neighbor_window
    )
    with self_extend(model, config):
        want = _logits(model, ids)
    with tuned_context("selfextend", model, W, length, {"group": 2}):
        got = _logits(model, ids)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with dual_chunk_attention(model, DualChunkConfig(chunk_size=10, local_window=2)):
        want = _logits(model, ids)
    with tuned_context("dca", model, W, length, {"chunk_size": 10}):
        torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)
    with pytest.raises(KeyError, match="has no knob 'size'"):
        tuned_context("selfextend", model, W, length, {"size": 2})
    with pytest.raises(ValueError, match="group must lie in"):
        tuned_context("selfextend", model, W, length, {"group": 1000})
    with pytest.raises(KeyError, match="methods with knobs"):
        tuned_context("lampe", model, W, length, {"mapping_length": 20})


class _MethodProfile:
    """What ``method_context`` reads of a method's profile."""

    def __init__(self, method, best, single):
        self.method, self.best, self.single = method, best, single

    def knob_values(self, length):
        return {"group": self.best.get(length, self.single)}


def test_a_profile_of_a_method_sets_its_knob_per_length():
    model = tiny_model("llama")
    profile = _MethodProfile("selfextend", {4 * W: 2}, 3)
    assert knob_values(profile, "selfextend", 4 * W) == {"group": 2}
    assert knob_values(profile, "selfextend", 3 * W) == {"group": 3}  # the single value elsewhere
    assert knob_values(profile, "dca", 4 * W) is None  # another method ignores it
    assert knob_values(None, "selfextend", 4 * W) is None
    ids = torch.randint(0, 96, (1, 4 * W), generator=torch.Generator().manual_seed(2))
    with tuned_context("selfextend", model, W, 4 * W, {"group": 2}):
        want = _logits(model, ids)
    with method_context("selfextend", model, W, 4 * W, profile):
        torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)
    with method_context("selfextend", model, W, 4 * W, None):
        default = _logits(model, ids)
    assert not torch.allclose(default, want)  # the default (G = 5 at 4·W) differs
    assert math.isfinite(float(want.abs().max()))


def test_lampe_fixed_ignores_a_profile_of_another_method():
    # LampeConfig's default head and tail (32, 16) do not fit the tiny window, so lampe-fixed
    # without a profile refuses it; with another method's profile it does the same (the profile
    # is not read as a LaMPE one).
    model = tiny_model("llama")
    for profile in (None, _MethodProfile("selfextend", {}, 2)):
        with pytest.raises(ValueError, match="mapping_length must exceed head \\+ tail"):
            method_context("lampe-fixed", model, W, 4 * W, profile)
