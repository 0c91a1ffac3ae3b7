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


def test_perf_measures_generation_scoring_and_writing_apart() -> None:
    from benchmark.perf import measure

    numbers = measure("tiny", 4, 4, 1)
    assert numbers["images"] == 4 and numbers["bare_images_per_s"] > 0 and numbers["harness_images_per_s"] > 0
    # classify + score and the written report are timed as phases of the run, not inferred from totals
    assert numbers["classify_score_share_of_generation"] > 0
    assert numbers["write_seconds"] > 0


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
