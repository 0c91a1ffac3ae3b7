"""Faults: SIGKILL at seeded points then resume, corrupt cache entries, a read-only or full output
folder, NaN/Inf predictions. All on the tiny profile.

Kill-and-resume runs in a subprocess (tests/fault_driver.py) that monkeypatches the stages from
the outside; nothing in the harness knows it is being killed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cache import Cache
from benchmark.runner import EXECUTION_FIELDS

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "fault_driver.py"

# Fields of results.json that legitimately differ between an uninterrupted and a resumed run:
# wall-clock seconds, the images *this process* generated, when it ran and where its artefacts came from.
RUN_DEPENDENT = EXECUTION_FIELDS
ALL_STAGES = ["generate", "write:images", "predict", "write:predictions", "score", "write:parquet",
              "write:samples", "write:results", "commit", "report"]


pytestmark = pytest.mark.usefixtures("one_thread")


def comparable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in RUN_DEPENDENT}


def _run_config(tones_file: Path) -> dict:
    # 3 images per prompt in batches of 2: a resume regenerates some images in other batches than
    # the uninterrupted run did, so batch-dependence of the sampler would show up as a difference.
    return {"profile": "tiny", "methods": [{"name": "baseline"}], "prompt_sets": [str(tones_file)],
            "classifiers": ["palette"], "images_per_prompt": 3, "batch_size": 2, "metrics": {"bootstrap": 30},
            "output_dir": "results", "cache_dir": "cache"}


def _only_dir(folder: Path) -> Path:
    (run_dir,) = [p for p in (folder / "results").iterdir() if p.is_dir()]
    return run_dir


def _visible_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory except leftovers of a killed writer (.staging-*, *.tmp)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and ".staging-" not in str(p.relative_to(run_dir)) and not p.name.endswith(".tmp")}


def _cache_entries(cache_dir: Path) -> tuple[int, int, list[str]]:
    """(valid images, valid predictions, temporary files); fails on any corrupt final-named entry."""
    cache = Cache(cache_dir)
    images = sorted((cache_dir / "images").rglob("*.png"))
    for png in images:
        if png.with_suffix(".json").exists():
            assert cache.get_image(png.stem) is not None, f"corrupt cache image {png}"
    preds = [p for p in (cache_dir / "predictions").rglob("*.json") if not p.name.startswith(".")]
    for pred in preds:  # predictions/<classifier fingerprint[:16]>/<sha[:2]>/<image sha>.json
        assert cache.get_predictions(pred.parent.parent.name, pred.stem) is not None, f"corrupt prediction {pred}"
    assert cache.corrupt_entries == 0
    tmp = [str(p) for p in cache_dir.rglob("*") if p.name.endswith(".tmp")]
    complete = sum(png.with_suffix(".json").exists() for png in images)
    return complete, len(preds), tmp


def _drive(tmp_path: Path, tones_file: Path, kill_points: int, stages: list[str], seed: int) -> dict:
    spec = {"config": _run_config(tones_file), "reference": str(tmp_path / "reference"),
            "trials": str(tmp_path / "trials"), "seed": seed, "kill_points": kill_points, "stages": stages}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "spec.json"), str(tmp_path / "report.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


def _check_resumed_runs_match(report: dict, tmp_path: Path) -> None:
    assert report["reference"] == "exit 0"
    reference_dir = _only_dir(tmp_path / "reference")
    reference = json.loads((reference_dir / "results.json").read_text())
    assert reference["failures"] == [] and reference["metrics"]
    expected_files = _visible_files(reference_dir)
    images, preds, _ = _cache_entries(tmp_path / "reference" / "cache")
    for trial in report["trials"]:
        where = f"kill at {trial['stage']}#{trial['n']} ({trial['phase']})"
        assert trial["killed"] == "SIGKILL", f"{where}: the run was not killed ({trial['killed']})"
        assert trial["resumed"] == "exit 0", f"{where}: the resumed run failed"
        run_dir = _only_dir(Path(trial["folder"]))
        results = json.loads((run_dir / "results.json").read_text())
        assert comparable(results) == comparable(reference), where
        # The resumed run generated only what was missing; the uninterrupted run generated all.
        assert results["cost"]["baseline"]["generated"] <= reference["cost"]["baseline"]["generated"]
        files = _visible_files(run_dir)
        assert files.keys() == expected_files.keys(), where
        for name in files:
            if name == "results.json":
                continue
            if name.endswith(".parquet"):
                pd.testing.assert_frame_equal(pd.read_parquet(run_dir / name),
                                              pd.read_parquet(reference_dir / name), obj=where)
            elif name != "report.html":  # the report embeds results.json (cost included)
                assert files[name] == expected_files[name], f"{where}: {name} differs"
        got_images, got_preds, _ = _cache_entries(Path(trial["folder"]) / "cache")
        assert (got_images, got_preds) == (images, preds), where


def test_sigkill_at_three_seeded_points_then_resume_matches(tmp_path: Path, tones_file: Path) -> None:
    """Quick version: one kill point in generation, one in classification, one while committing."""
    report = _drive(tmp_path, tones_file, 3, ["write:images", "write:predictions", "commit"], seed=11)
    assert [t["stage"] for t in report["trials"]] == ["write:images", "write:predictions", "commit"]
    _check_resumed_runs_match(report, tmp_path)


@pytest.mark.slow
def test_sigkill_at_twelve_seeded_points_then_resume_matches(tmp_path: Path, tones_file: Path) -> None:
    """12 seeded kill points over every stage: generation, classification, scoring and writing."""
    report = _drive(tmp_path, tones_file, 12, ALL_STAGES, seed=2024)
    assert len(report["trials"]) >= 10
    assert {t["part"] for t in report["trials"]} == {"generation", "classification", "scoring", "writing"}
    assert {t["phase"] for t in report["trials"]} == {"before", "torn", "after"}
    _check_resumed_runs_match(report, tmp_path)
    print("kill points survived:", len(report["trials"]),
          [(t["stage"], t["n"], t["phase"]) for t in report["trials"]], "counts:", report["counts"])


# -- in-process faults --------------------------------------------------------------------------



@pytest.fixture
def small_config(tmp_path: Path, tones_file: Path) -> Path:
    path = tmp_path / "run.yaml"
    cfg = {**_run_config(tones_file), "images_per_prompt": 2, "output_dir": str(tmp_path / "out"),
           "cache_dir": str(tmp_path / "cache"), "run_id": "r1"}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from benchmark.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def test_corrupt_cache_entries_are_regenerated_end_to_end(small_config: Path, tmp_path: Path, plain_report,
                                                          monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from benchmark.config import load_config
    from benchmark.runner import run
    from classifiers.palette import PaletteClassifier
    from methods.baseline import Baseline

    config = load_config(small_config)
    first = json.loads((run(config, progress=False) / "results.json").read_text())
    cache = tmp_path / "cache"
    pngs = sorted((cache / "images").rglob("*.png"))
    preds = sorted((cache / "predictions").rglob("*.json"))
    pngs[0].write_bytes(pngs[0].read_bytes()[:40])                      # truncated image
    data = bytearray(pngs[1].read_bytes())
    data[len(data) // 2] ^= 0x01                                        # one flipped bit
    pngs[1].write_bytes(bytes(data))
    text = preds[0].read_text()
    preds[0].write_text(text.replace("0.", "0.9", 1))                   # tampered probability
    preds[1].write_text(text[: len(text) // 2])                         # truncated JSON
    shutil.rmtree(cache / "cells")  # whole-cell copies would serve the re-score (damaged ones: test_cache)

    calls = {"images": 0, "predicted": 0}
    generate, predict = Baseline.generate, PaletteClassifier.predict

    def counting_generate(self, prompts, seeds):
        calls["images"] += len(seeds)
        return generate(self, prompts, seeds)

    def counting_predict(self, images):
        calls["predicted"] += len(images)
        return predict(self, images)

    monkeypatch.setattr(Baseline, "generate", counting_generate)
    monkeypatch.setattr(PaletteClassifier, "predict", counting_predict)
    with caplog.at_level("WARNING", logger="benchmark.cache"):
        again = json.loads((run(config, progress=False) / "results.json").read_text())
    # The two damaged images are regenerated (bit-identical, so their cached predictions still
    # apply); the two damaged predictions are recomputed.
    assert calls == {"images": 2, "predicted": 2}
    assert sum("is corrupt" in r.message for r in caplog.records) == 4
    assert comparable(again) == comparable(first)
    images, n_preds, tmp = _cache_entries(cache)
    assert (images, n_preds, tmp) == (8, 8, [])


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a folder unwritable, also for root (chattr +i), or skip when that is impossible."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        undo = ["chmod", "755", str(path)]
    else:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i: cannot make a folder read-only")
        undo = ["chattr", "-i", str(path)]
    try:
        probe = path / "probe"
        try:
            probe.write_bytes(b"x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"{path} is still writable")
        yield
    finally:
        subprocess.run(undo, check=True)


def test_read_only_output_dir_is_one_line_and_keeps_results(small_config: Path, tmp_path: Path, plain_report,
                                                            capsys) -> None:
    assert _cli(["run", str(small_config), "--quiet"], capsys)[0] == 0
    capsys.readouterr()
    run_dir = tmp_path / "out" / "r1"
    before = _visible_files(run_dir)
    with read_only(run_dir):
        rc, err = _cli(["run", str(small_config), "--quiet", "--bootstrap", "7"], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {run_dir}: output directory is not writable")
    assert _visible_files(run_dir) == before


def test_full_disk_while_writing_results_keeps_earlier_results(small_config: Path, tmp_path: Path, plain_report,
                                                               capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC where it shows on a real disk (fsync of the data), only for the run directory."""
    assert _cli(["run", str(small_config), "--quiet"], capsys)[0] == 0
    capsys.readouterr()
    run_dir = tmp_path / "out" / "r1"
    before = _visible_files(run_dir)
    fsync = os.fsync

    def full(fd: int) -> None:
        if str(run_dir) in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    # A changed setting under the same run id: its results would differ from the ones on disk.
    rc, err = _cli(["run", str(small_config), "--quiet", "--bootstrap", "7"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {run_dir}: cannot write the results") and "No space left on device" in err
    assert "earlier results there are unchanged" in err
    assert _visible_files(run_dir) == before
    assert not [p for p in run_dir.rglob("*") if ".staging-" in str(p) or p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "fsync", fsync)
    assert _cli(["run", str(small_config), "--quiet", "--bootstrap", "7"], capsys)[0] == 0
    assert json.loads((run_dir / "results.json").read_text())["config"]["metrics"]["bootstrap"] == 7


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_nan_or_inf_predictions_are_reported_by_method_and_prompt(small_config: Path, plain_report, bad: float,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.config import load_config
    from benchmark.runner import run
    from classifiers.palette import PaletteClassifier

    config = load_config(small_config)
    original = PaletteClassifier.predict
    calls = {"n": 0}

    def broken(self, images):
        calls["n"] += 1
        out = original(self, images)
        if calls["n"] == 2:  # the second prompt, "nurse": one image's probabilities are not finite
            out["tone"][1] = bad
        return out

    monkeypatch.setattr(PaletteClassifier, "predict", broken)
    results = json.loads((run(config, progress=False) / "results.json").read_text())
    (failure,) = results["failures"]
    assert {k: failure[k] for k in ("method", "prompt_set", "prompt_id", "stage")} == {
        "method": "baseline", "prompt_set": "tones", "prompt_id": "nurse", "stage": "classify"}
    assert "palette" in failure["error"] and "NaN/Inf" in failure["error"]
    assert "nurse" not in {m["prompt_id"] for m in results["metrics"]}
    assert all(np.isfinite(m["value"]) for m in results["metrics"] if m["value"] is not None)
    # Nothing non-finite was cached: a run with a working classifier predicts exactly that prompt.
    monkeypatch.setattr(PaletteClassifier, "predict", original)
    again = json.loads((run(config, progress=False) / "results.json").read_text())
    assert again["failures"] == [] and "nurse" in {m["prompt_id"] for m in again["metrics"]}
