"""The debias-bench command: listing, running, one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main


def test_list_methods_and_prompts(capsys) -> None:
    """One line per item: its name, then what it is (and for prompt sets, size and attributes)."""
    from methods import METHODS

    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == METHODS.names() == ["baseline", "ddm", "difflens", "invdiff",
                                                                      "selfdebias"]
    assert all(len(line.split()) > 3 for line in lines)  # every method is described
    assert main(["list", "prompts"]) == 0
    world = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("world "))
    assert "14 prompts" in world and "color, shade" in world
    for what in ("classifiers", "profiles"):
        assert main(["list", what]) == 0
        assert all(len(line.split()) > 3 for line in capsys.readouterr().out.splitlines())


def test_list_with_no_kind_lists_every_kind_with_sizes_attributes_and_profiles(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line and not line.startswith(" ")] == [
        "profiles:", "methods:", "classifiers:", "prompts:", "studies:"]
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "14 prompts x 200 images" in lines["world"] and "profiles: world" in lines["world"]
    assert "134 prompts" in lines["occupations"] and "profiles: real" in lines["occupations"]  # templated: counted
    assert "profiles: tiny" in lines["tones"]
    assert "defaults: prompts tones, classifiers palette" in lines["tiny"]
    assert "defaults: prompts occupations, classifiers fairface" in lines["real"]
    assert "world artefacts shipped (default, alt)" in lines["difflens"]
    assert lines["clip"].split()[1:3] == ["world", "profile:"]  # by name it is the world's CLIP, nothing else


def test_every_option_and_argument_has_help() -> None:
    import argparse

    from benchmark.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.dest}" for name, sub in [("debias-bench", parser), *subs.choices.items()]
               for action in sub._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help]
    assert missing == []


def test_help_shows_defaults_and_version(capsys) -> None:
    from benchmark import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"debias-bench {__version__}"
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-prompts" in text and "methods stay prepared on the full sets" in text
    assert main(["gate", "--help"]) == 0
    assert "(default: 0.05)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv,expected", [
    (["run", "--methods", "nope"], "error: command line: methods[0].name: unknown method 'nope'"),
    (["run", "missing.yaml"], "error: missing.yaml: config file not found"),
    (["run", "--profile", "tiny", "--prompt-sets", "nope", "--classifiers", "palette"],
     "error: command line: prompt_sets[0]: unknown prompt set 'nope'; known:"),
    (["method", "nope"], "error: unknown method 'nope'"),
    (["report", "/nonexistent-run"], "error: /nonexistent-run/results.json"),
    (["prepare", "--device", "gpu0"], "error: command line: device: 'gpu0' is not a torch device"),
])
def test_user_errors_are_one_line(capsys, argv, expected) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_the_exception(capsys) -> None:
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "run", "missing.yaml"])


def test_run_prints_summary_and_writes_results(tiny_config, tones_file, tmp_path, capsys) -> None:
    argv = ["run", "--profile", "tiny", "--methods", "baseline", "--prompt-sets", str(tones_file),
            "--classifiers", "palette", "--bootstrap", "20", "--quiet", "--images-per-prompt", "2",
            "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--run-id", "r1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tones · tone · classifier palette" in out and "\nbaseline " in out
    assert max(len(line) for line in out.splitlines() if not line.startswith(("results:", "report:", "every"))) <= 100
    results = json.loads((tmp_path / "out" / "r1" / "results.json").read_text())
    assert results["config"]["images_per_prompt"] == 2


def test_perf_takes_its_options_directly(monkeypatch) -> None:
    import benchmark.perf

    seen = {}
    monkeypatch.setattr(benchmark.perf, "measure", lambda *a: seen.setdefault("args", a) and {})
    assert main(["perf", "--images", "8", "--repeats", "1", "--profile", "tiny"]) == 0
    assert seen["args"] == ("tiny", 8, 100, 1)
    assert main(["perf", "--bogus"]) == 2


def test_perf_on_a_model_refuses_bad_arguments_before_any_work(capsys, monkeypatch) -> None:
    import benchmark.perf_real

    monkeypatch.setattr(benchmark.perf_real, "measure", lambda *a: pytest.fail("measured despite bad input"))
    assert main(["perf", "--model", "sd15-random", "--methods", "baseline,nope"]) == 2
    assert capsys.readouterr().err == ("error: perf: unknown method 'nope' (known: baseline, ddm, invdiff, "
                                       "selfdebias, difflens)\n")
    assert main(["perf", "--model", "sd15-random", "--steps", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["perf", "--model", "sd15-random", "--images", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["perf", "--model", "sd15-random", "--resolution", "100"]) == 2
    assert "multiple of 8" in capsys.readouterr().err


def test_perf_measures_generation_scoring_and_writing_apart() -> None:
    from benchmark.perf import measure

    numbers = measure("tiny", 4, 4, 1)
    assert numbers["images"] == 4 and numbers["bare_images_per_s"] > 0 and numbers["harness_images_per_s"] > 0
    # classify + score and the written report are timed as phases of the run, not inferred from totals
    assert numbers["classify_score_share_of_generation"] > 0
    assert numbers["write_seconds"] > 0
    assert numbers["reference_seconds"] is None  # the tiny profile has no FID reference to warm


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error(capsys) -> None:
    assert main(["prepare", "--methods", "baseline", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config: device: 'cuda' asked for, but CUDA is not available") and err.count("\n") == 1


def test_library_chatter_is_off_unless_verbose(monkeypatch) -> None:
    """Weight-loading bars and the model libraries' notices are silenced for a plain command (set
    before those libraries load); `-v` leaves them on."""
    import os
    import warnings

    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings():
        assert main(["-v", "list", "profiles"]) == 0
        assert "TRANSFORMERS_VERBOSITY" not in os.environ
        assert main(["list", "profiles"]) == 0
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            from benchmark.cli import _quiet_libraries

            _quiet_libraries()
            warnings.warn_explicit("old", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
            warnings.warn_explicit("ours", FutureWarning, "y.py", 1, module="benchmark.runner")
        assert [str(w.message) for w in seen] == ["ours"]


def test_leaderboard_folder_is_named_never_the_working_directory(tmp_path, monkeypatch, capsys) -> None:
    """`leaderboard build` works on the project's leaderboard by default, wherever it runs; --leaderboard DIR
    names another folder (DIR/entries in, DIR/site out), and nothing appears in the working directory."""
    import shutil
    from pathlib import Path

    from leaderboard_runs import make_run

    from benchmark.cli import build_parser

    monkeypatch.setattr("leaderboard.html.all_figures", lambda *a: ([], []))  # figures: test_leaderboard_html
    args = build_parser().parse_args(["leaderboard", "build"])
    assert Path(args.leaderboard) == Path(__file__).resolve().parents[1] / "leaderboard" and args.entries is None
    board = tmp_path / "board"
    run = make_run(tmp_path, "run-w", methods={"baseline": 0.3, "ddm": 0.1}, n=8, n_boot=10)
    shutil.copytree(run, board / "entries" / "run-w")
    (board / "entries" / "run-w" / "entry.json").write_text(json.dumps({"run_id": "run-w"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["leaderboard", "build", "--leaderboard", str(board)]) == 0
    assert f"leaderboard: {board / 'site' / 'index.html'}" in capsys.readouterr().out
    assert "run-w" in (board / "site" / "index.html").read_text() and list(elsewhere.iterdir()) == []


def test_estimate_adds_generation_training_and_scoring_at_a_reference_runs_timings() -> None:
    from benchmark.estimate import estimate

    reference = {"run_id": "ref", "config": {"profile": "world"},
                 "cost": {"baseline": {"seconds_per_image": 0.05, "timed_images": 100},
                          "ddm": {"seconds_per_image": 0.1, "train_seconds": 200.0, "timed_images": 100}},
                 "execution": {"machine": {"cpu": "AMD EPYC", "cores": 2}, "phase_seconds": {"load": 5.0, "classify": 1.0,
                                                                                             "score": 3.0}}}
    # 1000 images per method: baseline 50 s + ddm 100 s + an unknown method at the baseline's 50 s; ddm trains
    # 200 s; loading 5 s + scoring 3000 images at 4 s per 200 = 60 s
    line = estimate("world", 1000, [("baseline", "baseline", False), ("ddm", "ddm", True), ("new", "new", True)],
                    reference)
    assert line.startswith("estimated time from an empty cache: about 7 min 45 s (generation 3 min 20 s, training "
                           "3 min 20 s, loading and scoring 1 min 05 s), at the timings of run ref on AMD EPYC, 2 cores")
    assert line.endswith("counted at the baseline's speed or as no training: new, new training")
    assert estimate("real", 10, [("baseline", "baseline", False)], None).startswith("estimated time: none")


def test_dry_run_prints_the_plan_and_an_estimate(capsys) -> None:
    from benchmark.estimate import reference_run

    argv = ["run", "--dry-run", "--methods", "baseline,difflens", "--max-prompts", "2", "--images-per-prompt", "10"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert "prompt set world: 2 prompts x 10 images" in out and "images: 40 (20 per method; cached ones are read back)" in out
    assert out[-1].startswith("estimated time from an empty cache: about ")
    assert f"at the timings of run {reference_run('world')['run_id']} on " in out[-1]
    assert main(["run", "--dry-run", "--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "prompt set tones: 4 prompts x 8 images" in out and "classifiers: palette" in out
    assert "estimated time: none" in out and "TRAINS" not in out  # the tiny default: the baseline alone


def test_report_prints_the_headline_in_100_columns_and_every_metric_on_request(tmp_path, monkeypatch, capsys) -> None:
    from leaderboard_runs import make_run

    monkeypatch.setattr("leaderboard.html.all_figures", lambda *a: ([], []))  # figures: test_leaderboard_html
    run = make_run(tmp_path, "run-a", methods={"baseline": 0.35, "ddm": 0.02}, n=12, n_boot=10)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synth · color · classifier synthclf: soft FD") and "\nddm " in out
    headline = out[: out.index("\nevery set-level metric: `debias-bench report")]  # the lines after name paths
    assert max(map(len, headline.splitlines())) <= 100
    assert f"report: {run / 'report.html'}" in out
    assert main(["report", str(run), "--all"]) == 0
    assert "fd:soft:color" in capsys.readouterr().out
