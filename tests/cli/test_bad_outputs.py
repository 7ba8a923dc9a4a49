"""Where ``lampe-calibrate`` writes and what profiles ``lampe-eval`` reads, with hostile inputs:
each case exits with code 2 after one line on stderr, before the model loads where it can, and
changes nothing (every file under the test's directory and the package's shipped profiles are
compared before and after). ``tests/cli/test_bad_input.py`` covers the other flags."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import huggingface_hub.constants
import pytest
from calib_support import REFERENCE_DIR, SAMPLE, minimal_profile, tiny_model_dir

from lampe_calib.calibration import shipped_profiles_dir
from lampe_calib.cli import calibrate_main, eval_main

PACKAGE = REFERENCE_DIR.parents[1]  # lampe_calib/


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def _snapshot(*roots: Path) -> dict:
    """Every file under ``roots``: its bytes and mode (links as their target)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                out[str(path)] = ("link", str(path.readlink()))
            elif path.is_file():
                out[str(path)] = (path.read_bytes(), path.stat().st_mode)
            else:
                out[str(path)] = ("dir", path.stat().st_mode)
    return out


def _setup(tmp: Path) -> dict[str, str]:
    """The files the cases name, by ``{key}``."""
    (tmp / "loop").symlink_to(tmp / "loop")
    (tmp / "ro-out").mkdir()
    (tmp / "ro-out" / "tiny.json").write_text("{}")
    (tmp / "ro-out" / "tiny.json").chmod(0o444)
    (tmp / "corrupt-out").mkdir()
    (tmp / "corrupt-out" / "tiny.db").write_bytes(b"not a database, " * 100)
    (tmp / "corrupt.db").write_bytes(b"SQLite format 3\0" + b"\xff" * 4000)
    with sqlite3.connect(tmp / "ro.db") as connection:
        connection.execute("CREATE TABLE t (x)")
    (tmp / "ro.db").chmod(0o444)
    profile = minimal_profile(32)
    deep = "[" * 100_000 + "]" * 100_000
    (tmp / "deep.json").write_text(deep)
    (tmp / "deep-field.json").write_text(json.dumps(profile).replace('"scaling": {}', f'"scaling": {deep}'))
    (tmp / "latin1.json").write_bytes(
        json.dumps({**profile, "provenance": {"notes": "é"}}, ensure_ascii=False).encode("latin-1")
    )
    (tmp / "typo.json").write_text(
        json.dumps({**profile, "lampe": {**profile["lampe"], "atention_factor": 2}})
    )
    return {"tmp": str(tmp), "package": str(PACKAGE), "shipped": str(shipped_profiles_dir())}


def _fill(values: list[str], paths: dict[str, str]) -> list[str]:
    return [re.sub(r"\{([^}]+)\}", lambda m: paths[m.group(1)], v) for v in values]


# (arguments after --model; the message, a regex). Every case fails before the model loads.
CALIBRATE = [
    (["--out", "{shipped}"], r"--out '.*profiles' is inside the installed package .*omit --out to use"),
    (["--out", "{package}/../profiles"], r"is inside the installed package \(.*lampe_calib/profiles\)"),
    (["--out", "{shipped}/sub"], r"is inside the installed package"),
    (["--out", "{package}/assets", "--update-shipped"], r"only lampe_calib/profiles may be written"),
    (
        ["--storage", "sqlite:///{shipped}/smollm2-135m.db"],
        r"--storage 'sqlite:///.*/smollm2-135m.db' is inside the installed package",
    ),
    (["--out", "{tmp}/loop"], r"--out '.*loop': cannot resolve the path \(a symbolic link loop\?\)"),
    (["--out", "{tmp}/loop/sub"], r"--out '.*loop/sub': cannot resolve the path"),
    (["--out", "/sys/lampe-out"], r"--out '/sys/lampe-out': cannot write in '/sys' \(Permission denied\)"),
    (
        ["--out", "{tmp}/ro-out"],
        r".*ro-out/tiny.json is read-only; lampe-calibrate never replaces a read-only",
    ),
    (
        ["--out", "{tmp}/corrupt-out"],
        r"--storage sqlite:///.*corrupt-out/tiny.db: .* is not a readable SQLite",
    ),
    (["--storage", "sqlite:///{tmp}/corrupt.db"], r"corrupt.db is not a readable SQLite database"),
    (["--storage", "sqlite:///{tmp}/ro.db"], r"ro.db is read-only; a sweep records its trials there"),
    (["--lengths", "2W"], r"--lengths 2w: fitting m\(L\) needs at least 3 lengths .*add --no-fit"),
    (["--lengths", "64,2W,64"], r"--lengths 64,2w: fitting m\(L\) needs at least 3 lengths"),
]
EVAL = [
    (["--profile", "{tmp}/deep.json"], r"profile .*deep.json: not a profile: JSON nested too deeply"),
    (["--profile", "{tmp}/deep-field.json"], r"deep-field.json: not a profile: JSON nested too deeply"),
    (
        ["--profile", "{tmp}/latin1.json"],
        r"profile .*latin1.json: not valid UTF-8 \(byte 0xe9 at offset \d+\)",
    ),
    (
        ["--profile", "{tmp}/typo.json"],
        r"profile field 'lampe.atention_factor' is not part of schema version 1",
    ),
    (
        ["--profile", "llama3-8b"],
        r"--profile 'llama3-8b': profile 'llama3-8b' was fitted on meta-llama/Meta-Llama-3-8B "
        r"\(llama, W 8192, .*\), this model is tiny \(llama, W 32, .*\): window 8192 vs 32; "
        r"rope_theta 500000.0 vs 10000.0; "
        r"head_dim 128 vs 8; pass allow_transfer=True \(--allow-transfer\)",
    ),
]


def _check(code: int, err: str, prog: str, message: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert re.search(message, lines[0]), f"{message!r} not in {lines[0]!r}"


@pytest.mark.parametrize("extra, message", CALIBRATE, ids=[" ".join(a) for a, _ in CALIBRATE])
def test_lampe_calibrate(extra, message, model_dir, tmp_path, capsys, monkeypatch):
    paths = _setup(tmp_path)
    before = _snapshot(tmp_path, shipped_profiles_dir())
    import lampe_calib.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(lampe_calib.models, "load_model", no_loading)
    argv = ["--model", str(model_dir), "--head", "4", "--tail", "2", *_fill(extra, paths)]
    _check(calibrate_main(argv), capsys.readouterr().err, "lampe-calibrate", message)
    assert _snapshot(tmp_path, shipped_profiles_dir()) == before


@pytest.mark.parametrize("extra, message", EVAL, ids=[" ".join(a) for a, _ in EVAL])
def test_lampe_eval_profiles(extra, message, model_dir, tmp_path, capsys):
    paths = _setup(tmp_path)
    before = _snapshot(tmp_path, shipped_profiles_dir())
    argv = ["ppl", "--model", str(model_dir), "--methods", "lampe", "--lengths", "2W", "--samples", "2"]
    argv += ["--data", str(SAMPLE), "--json", str(tmp_path / "results.json"), *_fill(extra, paths)]
    _check(eval_main(argv), capsys.readouterr().err, "lampe-eval", message)
    assert _snapshot(tmp_path, shipped_profiles_dir()) == before


def test_a_transfer_asked_for_runs(model_dir, tmp_path, capsys, caplog):
    argv = ["ppl", "--model", str(model_dir), "--methods", "lampe", "--lengths", "2W", "--samples", "2"]
    argv += ["--data", str(SAMPLE), "--profile", "llama3-8b", "--allow-transfer"]
    with caplog.at_level("WARNING"):
        assert eval_main(argv) == 0, capsys.readouterr().err
    assert "profile 'llama3-8b' was fitted on meta-llama/Meta-Llama-3-8B (" in caplog.text
    assert "as an explicit transfer" in caplog.text


@pytest.mark.parametrize("name", ["a?b", "x%41y"])
def test_out_with_url_characters_names_exactly_that_storage(name, model_dir, tmp_path, capsys):
    """``?`` and ``%41`` in --out stay in the file name of the default storage (no query string,
    no decoding): the run and its resume use ``OUT/<name>.db`` and nothing else."""
    out = tmp_path / name
    argv = ["--model", str(model_dir), "--out", str(out), "--head", "4", "--tail", "2", "--lengths", "64"]
    argv += ["--mappings", "10,20", "--samples", "2", "--no-fit", "--data", str(SAMPLE)]
    assert calibrate_main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert sorted(p.name for p in out.iterdir()) == ["tiny.db", "tiny.json", "tiny.png"]
    capsys.readouterr()
    assert calibrate_main(argv) == 0
    assert "trials 0/0" in capsys.readouterr().out  # resumed from that very file


def test_profile_and_figure_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    """A failure between the two renames puts the old profile back; no temporary file stays."""
    import os

    from lampe_calib.calibration import write_together

    (tmp_path / "p.json").write_bytes(b"old json")
    (tmp_path / "p.png").write_bytes(b"old png")
    replace = os.replace

    def fail_on_png(src, dst):
        if str(dst).endswith("p.png"):
            raise OSError(28, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_png)
    with pytest.raises(OSError, match="No space left"):
        write_together([(tmp_path / "p.json", b"new json"), (tmp_path / "p.png", b"new png")])
    monkeypatch.setattr(os, "replace", replace)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        "p.json": b"old json",
        "p.png": b"old png",
    }
    write_together([(tmp_path / "p.json", b"new json"), (tmp_path / "p.png", b"new png")])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        "p.json": b"new json",
        "p.png": b"new png",
    }
