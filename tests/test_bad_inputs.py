"""A corpus of malformed configs, prompt files, names, parameter values and command lines.

Each goes through ``debias-bench`` (``benchmark.cli.main``, a few through a real subprocess) and
must give exit status 2 and exactly one line on stderr that starts with the file (or "command
line") and names the field or name at fault; never a traceback unless ``--debug``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cli import main

ROOT = Path(__file__).resolve().parent.parent

BASE = {"profile": "tiny", "methods": [{"name": "baseline"}], "classifiers": ["palette"],
        "prompt_sets": ["tones.yaml"], "images_per_prompt": 1, "max_prompts": 1, "metrics": {"bootstrap": 0},
        "output_dir": "out", "cache_dir": "cache"}

TONES = {"name": "tones", "description": "two tones", "source": "project-made", "attributes": ["tone"],
         "classes": {"tone": ["warm", "cool"]}, "images_per_prompt": 1,
         "prompts": [{"id": "doctor", "text": "a photo of a doctor"}, {"id": "nurse", "text": "a photo of a nurse"}]}

# A YAML alias bomb ("billion laughs"): 8 levels of 9 references, 9**8 leaves once expanded.
BOMB = "[&l1 [x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(2, 9)) + "]"


def cfg(**changes: object) -> str:
    """The base run config with top-level fields changed (None removes one), as YAML (JSON)."""
    data = {**BASE, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def ddm(**params: object) -> str:
    return cfg(methods=[{"name": "ddm", "params": params}])


def prompts(**changes: object) -> str:
    data = {**TONES, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def run_with(prompt_text: str | bytes) -> dict[str, str | bytes]:
    return {"run.yaml": cfg(prompt_sets=["p.yaml"]), "p.yaml": prompt_text}


# (id, files to write, argv, expected start of the message after "error: ", substrings it contains)
CASES: list[tuple[str, dict[str, str | bytes], list[str], str, list[str]]] = [
    # -- run configs: syntax ------------------------------------------------------------------
    ("yaml-unclosed-flow", {"run.yaml": "methods: [{name: baseline}\n"}, ["run.yaml"], "run.yaml: line", ["invalid YAML"]),
    ("yaml-bad-indent", {"run.yaml": "seed: 1\n  batch_size: 2\n"}, ["run.yaml"], "run.yaml: line", ["invalid YAML"]),
    ("yaml-nul-byte", {"run.yaml": "seed: 1\x00\n"}, ["run.yaml"], "run.yaml: ", ["invalid YAML"]),
    ("binary-config", {"run.yaml": bytes(range(256)) * 4}, ["run.yaml"], "run.yaml: ", ["invalid YAML"]),
    ("toml-syntax", {"run.toml": "seed = \n"}, ["run.toml"], "run.toml: invalid TOML", []),
    ("deeply-nested-yaml", {"run.yaml": "[" * 5000 + "]" * 5000}, ["run.yaml"], "run.yaml: nested too deeply", []),
    ("deeply-nested-toml", {"run.toml": "a = " + "[" * 5000 + "]" * 5000}, ["run.toml"], "run.toml: nested", []),
    ("config-too-large", {"run.yaml": "# " + "x" * (1 << 20)}, ["run.yaml"], "run.yaml: config file larger", []),
    ("config-is-a-folder", {"dir.yaml/keep": ""}, ["dir.yaml"], "dir.yaml: config file not found", []),
    ("config-json-suffix", {"run.json": "{}"}, ["run.json"], "run.json: unsupported config type", []),
    ("top-level-list", {"run.yaml": "- a\n- b\n"}, ["run.yaml"], "run.yaml: (top level): expected a mapping", []),
    ("cache-dir-is-a-file", {"run.yaml": cfg(cache_dir="afile"), "afile": "x"}, ["run.yaml"],
     "afile: cache directory is not writable", []),
    ("empty-output-dir", {"run.yaml": cfg(output_dir="")}, ["run.yaml"], "run.yaml: output_dir: ", ["at least 1"]),
    ("duplicate-key", {"run.yaml": "seed: 1\nseed: 2\n"}, ["run.yaml"], "run.yaml: line 2", ["duplicate key 'seed'"]),
    ("duplicate-method-name", {"run.yaml": "methods:\n  - {name: baseline, name: ddm}\n"}, ["run.yaml"],
     "run.yaml: line 2", ["duplicate key 'name'"]),
    # -- run configs: fields -------------------------------------------------------------------
    ("unknown-field", {"run.yaml": cfg(bogus=1)}, ["run.yaml"], "run.yaml: bogus: unknown field", []),
    ("unknown-nested-field", {"run.yaml": cfg(sampler={"steps": 3})}, ["run.yaml"], "run.yaml: sampler.steps: unknown field", []),
    ("pyproject-unknown-field", {"pyproject.toml": "[tool.debias-bench]\nbogus = 1\n"}, ["pyproject.toml"],
     "pyproject.toml: bogus: unknown field", []),
    ("batch-size-string", {"run.yaml": cfg(batch_size="lots")}, ["run.yaml"], "run.yaml: batch_size: ", ["integer"]),
    ("batch-size-zero", {"run.yaml": cfg(batch_size=0)}, ["run.yaml"], "run.yaml: batch_size: ", ["greater than"]),
    ("images-negative", {"run.yaml": cfg(images_per_prompt=-3)}, ["run.yaml"], "run.yaml: images_per_prompt: ", []),
    ("images-boolean", {"run.yaml": cfg(images_per_prompt=True)}, ["run.yaml"], "run.yaml: images_per_prompt: ",
     ["true/false"]),
    ("bootstrap-boolean", {"run.yaml": cfg(metrics={"bootstrap": False})}, ["run.yaml"], "run.yaml: metrics.bootstrap: ",
     ["true/false"]),
    ("bootstrap-negative", {"run.yaml": cfg(metrics={"bootstrap": -1})}, ["run.yaml"], "run.yaml: metrics.bootstrap: ", []),
    ("seed-too-large", {"run.yaml": cfg(seed=2**40)}, ["run.yaml"], "run.yaml: seed: ", []),
    ("seed-float", {"run.yaml": cfg(seed=1.5)}, ["run.yaml"], "run.yaml: seed: ", []),
    ("guidance-yaml-nan", {"run.yaml": "profile: tiny\nsampler: {guidance_scale: .nan}\n"}, ["run.yaml"],
     "run.yaml: sampler.guidance_scale: ", []),
    ("methods-a-string", {"run.yaml": cfg(methods="baseline")}, ["run.yaml"], "run.yaml: methods: ", ["list"]),
    ("methods-empty", {"run.yaml": cfg(methods=[])}, ["run.yaml"], "run.yaml: methods: at least one", []),
    ("method-twice", {"run.yaml": cfg(methods=[{"name": "baseline"}, {"name": "baseline"}])}, ["run.yaml"],
     "run.yaml: methods: ", ["listed twice"]),
    ("label-path", {"run.yaml": cfg(methods=[{"name": "baseline", "label": "../../evil"}])}, ["run.yaml"],
     "run.yaml: methods[0].label: ", []),
    ("run-id-parent", {"run.yaml": cfg(run_id="../escape")}, ["run.yaml"], "run.yaml: run_id: ", []),
    ("run-id-absolute", {"run.yaml": cfg(run_id="/tmp/x")}, ["run.yaml"], "run.yaml: run_id: ", []),
    # -- run configs: names ----------------------------------------------------------------------
    ("unknown-method", {"run.yaml": cfg(methods=[{"name": "ddn"}])}, ["run.yaml"],
     "run.yaml: methods[0].name: unknown method 'ddn'", ["known: baseline"]),
    ("unknown-classifier", {"run.yaml": cfg(classifiers=["facey"])}, ["run.yaml"],
     "run.yaml: classifiers: unknown classifier 'facey'", []),
    ("unknown-prompt-set", {"run.yaml": cfg(prompt_sets=["nope"])}, ["run.yaml"],
     "run.yaml: prompt_sets[0]: unknown prompt set 'nope'", ["occupations"]),
    ("missing-prompt-file", {"run.yaml": cfg(prompt_sets=["missing.yaml"])}, ["run.yaml"],
     "run.yaml: prompt_sets[0]: prompt file 'missing.yaml' not found", []),
    ("unknown-profile", {"run.yaml": cfg(profile="cloud")}, ["run.yaml"], "run.yaml: profile: ", ["'tiny'"]),
    ("unknown-variant", {"run.yaml": cfg(profile="world", variant="nope", classifiers=["world"], prompt_sets=["world"])},
     ["run.yaml"], "run.yaml: variant: unknown world variant 'nope'", []),
    ("unknown-debias-attribute", {"run.yaml": cfg(debias_attribute="skin")}, ["run.yaml"],
     "run.yaml: debias_attribute: unknown attribute 'skin'", ["tone"]),
    # -- run configs: method parameters ------------------------------------------------------------
    ("param-unknown", {"run.yaml": ddm(alhpa=0.1)}, ["run.yaml"], "run.yaml: methods[0].params.alhpa: unknown parameter", []),
    ("param-fractional-int", {"run.yaml": ddm(lora_rank=2.5)}, ["run.yaml"], "run.yaml: methods[0].params.lora_rank: ", []),
    ("param-string", {"run.yaml": ddm(alpha="lots")}, ["run.yaml"], "run.yaml: methods[0].params.alpha: ", ["number"]),
    ("param-nan", {"run.yaml": "methods: [{name: ddm, params: {alpha: .nan}}]\n"}, ["run.yaml"],
     "run.yaml: methods[0].params.alpha: ", ["finite"]),
    ("param-out-of-range", {"run.yaml": ddm(alpha=-1)}, ["run.yaml"], "run.yaml: methods[0].params.alpha: ",
     ["greater than or equal to 0"]),
    ("param-adam-beta", {"run.yaml": ddm(adam_betas=[1.5, 0.999])}, ["run.yaml"], "run.yaml: methods[0].params.adam_betas.0: ",
     ["less than 1"]),
    ("param-negative-lr", {"run.yaml": cfg(methods=[{"name": "invdiff", "params": {"learning_rate": -1}}])}, ["run.yaml"],
     "run.yaml: methods[0].params.learning_rate: ", ["greater than 0"]),
    ("param-sae-lr", {"run.yaml": cfg(methods=[{"name": "difflens", "params": {"sae_lr": -1}}])}, ["run.yaml"],
     "run.yaml: methods[0].params.sae_lr: ", ["greater than 0"]),
    ("param-dropout", {"run.yaml": cfg(methods=[{"name": "selfdebias", "params": {"dropout": 2.0}}])}, ["run.yaml"],
     "run.yaml: methods[0].params.dropout: ", ["less than 1"]),
    ("param-bad-choice", {"run.yaml": cfg(methods=[{"name": "invdiff", "params": {"grouping": "x"}}])}, ["run.yaml"],
     "run.yaml: methods[0].params: grouping must be one of", []),
    ("params-a-list", {"run.yaml": cfg(methods=[{"name": "ddm", "params": [1, 2]}])}, ["run.yaml"],
     "run.yaml: methods[0].params: ", []),
    ("param-alias-bomb", {"run.yaml": "methods: [{name: ddm, params: {unet_targets: " + BOMB + "}}]\n"}, ["run.yaml"],
     "run.yaml: methods[0].params.unet_targets", []),
    # -- prompt files -------------------------------------------------------------------------------
    ("prompt-yaml-syntax", run_with("name: p\nprompts: [\n"), ["run.yaml"], "p.yaml: line", ["invalid YAML"]),
    ("prompt-duplicate-key", run_with("name: p\nimages_per_prompt: 2\nimages_per_prompt: 3\n"), ["run.yaml"],
     "p.yaml: line 3", ["duplicate key 'images_per_prompt'"]),
    ("prompt-empty", run_with(""), ["run.yaml"], "p.yaml: file is empty", []),
    ("prompt-not-utf8", run_with(b"name: \xff\xfe\n"), ["run.yaml"], "p.yaml: not UTF-8", []),
    ("prompt-too-large", run_with("# " + "x" * 1_000_001), ["run.yaml"], "p.yaml: file larger than", []),
    ("prompt-deeply-nested", run_with("[" * 5000 + "]" * 5000), ["run.yaml"], "p.yaml: nested too deeply", []),
    ("prompt-missing-classes", run_with(prompts(name="p", classes=None)), ["run.yaml"],
     "p.yaml: classes: missing required field", []),
    ("prompt-unknown-field", run_with(prompts(name="p", bogus=1)), ["run.yaml"], "p.yaml: bogus: unknown field", []),
    ("prompt-name-mismatch", run_with(prompts()), ["run.yaml"], "p.yaml: name: ", ["file name"]),
    ("prompt-missing-text", run_with(prompts(name="p", prompts=[{"id": "a"}])), ["run.yaml"],
     "p.yaml: prompts[0].text: missing required field", []),
    ("prompt-duplicate-id", run_with(prompts(name="p", prompts=[{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])),
     ["run.yaml"], "p.yaml: prompts[1].id: duplicate id 'a'", []),
    ("prompt-id-path", run_with(prompts(name="p", prompts=[{"id": "../x", "text": "x"}])), ["run.yaml"],
     "p.yaml: prompts[0].id: ", ["slug"]),
    ("prompt-named-unknown-class", run_with(prompts(name="p", prompts=[{"id": "a", "text": "x", "named": {"tone": "hot"}}])),
     ["run.yaml"], "p.yaml: prompts[0].named.tone: unknown class 'hot'", []),
    ("prompt-target-sum", run_with(prompts(name="p", target={"tone": {"warm": 0.7, "cool": 0.7}})), ["run.yaml"],
     "p.yaml: target.tone: probabilities sum to", []),
    ("prompt-classes-vs-classifier", run_with(prompts(name="p", classes={"tone": ["hot", "cold"]})), ["run.yaml"],
     "p.yaml: classes.tone: ", ["palette"]),
    ("prompt-attribute-no-classifier", run_with(prompts(name="p", attributes=["gender"],
                                                        classes={"gender": ["male", "female"]})),
     ["run.yaml"], "p.yaml: attributes: none of gender", ["palette"]),
    # -- command lines ---------------------------------------------------------------------------------
    ("flag-bad-choice", {}, ["--profile", "cloud"], "debias-bench run: argument --profile: invalid choice", []),
    ("flag-not-an-int", {}, ["--images-per-prompt", "abc"], "debias-bench run: argument --images-per-prompt", []),
    ("flag-unknown", {}, ["--frobnicate"], "debias-bench: unrecognized arguments: --frobnicate", []),
    ("flag-negative-images", {}, ["--images-per-prompt", "-3"], "command line: images_per_prompt: ", []),
    ("flag-unknown-method", {}, ["--methods", "nope"], "command line: methods[0].name: unknown method 'nope'", []),
    ("flag-zero-steps", {}, ["--steps", "0"], "command line: sampler.num_inference_steps: ", []),
    ("flag-run-id-escape", {}, ["--run-id", "../x"], "command line: run_id: ", []),
    ("missing-config", {}, ["missing.yaml"], "missing.yaml: config file not found", []),
    ("difflens-needs-ddim", {"run.yaml": cfg(methods=[{"name": "difflens"}], sampler={"scheduler": "pndm"})},
     ["run.yaml"], "difflens: the two-pass update needs a DDIMScheduler, got PNDMScheduler", ["--scheduler ddim"]),
    ("scheduler-unknown", {}, ["--scheduler", "lms"], "debias-bench run: argument --scheduler: invalid choice", []),
    ("reference-stats-pickle", {"run.yaml": cfg(reference_stats="s.npz"), "s.npz": b"PK\x03\x04 not an npz"},
     ["run.yaml"], "run.yaml: reference_stats: s.npz: unreadable feature statistics", []),
    ("device-meta", {}, ["--device", "meta"], "command line: device: ", ["cannot run on a 'meta' device"]),
    ("prompts-too-many-images", run_with(prompts(name="p", images_per_prompt=100_000_000)), ["run.yaml"],
     "p.yaml: images_per_prompt: ", ["more than 1,000,000"]),
    ("ddm-unknown-lora-target", {"run.yaml": ddm(unet_targets=["nonexistent"])}, ["run.yaml"],
     "ddm: unet_targets ['nonexistent'] name no module", []),
]

# Commands other than `run` (the argv is complete).
OTHER = [
    ("report-missing-dir", {}, ["report", "nonexistent"], "nonexistent/results.json", []),
    ("report-invalid-json", {"rd/results.json": "{bad"}, ["report", "rd"], "rd/results.json: not valid JSON", []),
    ("report-json-list", {"rd/results.json": "[]"}, ["report", "rd"], "rd/results.json: ", []),
    ("list-unknown", {}, ["list", "things"], "debias-bench list: argument what: invalid choice", []),
    ("method-unknown", {}, ["method", "nope"], "unknown method 'nope'", []),
    ("method-without-diagnostics", {}, ["method", "ddm"], "method 'ddm' has no diagnostics", ["debias-bench study"]),
    ("study-unknown", {}, ["study", "nope"], "unknown study 'nope'", []),
    ("study-bad-knob", {"s.yaml": "methods: [{name: ddm, grid: {alfa: [1]}}]"}, ["study", "s.yaml"],
     "s.yaml: methods.0.grid.alfa: ddm has no parameter 'alfa'", []),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tones.yaml").write_text(json.dumps(TONES))
    return tmp_path


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def test_the_corpus_has_at_least_thirty_inputs() -> None:
    assert len(CASES) + len(OTHER) >= 30
    assert len({c[0] for c in CASES + OTHER}) == len(CASES) + len(OTHER)


@pytest.mark.parametrize(("files", "argv", "start", "contains"), [c[1:] for c in CASES + OTHER],
                         ids=[c[0] for c in CASES + OTHER])
def test_bad_input_is_one_line_naming_file_and_field(workdir: Path, capsys, files, argv, start, contains) -> None:
    _write(workdir, files)
    full = argv if (argv[0] in ("report", "list", "method", "study")) else ["run", *argv, "--quiet"]
    began = time.perf_counter()
    rc = main(full)
    seconds = time.perf_counter() - began
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (rc, err, captured.out[-500:])
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"error: {start}"), err
    assert all(s in err for s in contains), err
    assert "Traceback" not in err
    assert not (workdir / "out").exists(), "nothing may be generated for a bad input"
    assert seconds < 30, f"took {seconds:.0f} s to refuse"


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmark", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_real_process_exit_status_one_line_and_debug_traceback(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("methods: [{name: baseline}\n")
    for argv in (["run", "run.yaml"], ["run", "--profile", "cloud"], ["nonsense"]):
        proc = _cli(*argv, cwd=tmp_path)
        assert proc.returncode == 2, proc
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr
    debug = _cli("--debug", "run", "run.yaml", cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
