"""FID, KID, ΔFID and CLIP scores of a bundle are recomputed from its features.safetensors; the
thumbnails are recomputed from their pixels against their rows; cost is accepted as reported."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import load_config
from benchmark.hashing import hash_bytes
from benchmark.quality import FEATURES_FILE, load_vectors
from benchmark.runner import run
from leaderboard.quality_check import recompute, registered_world
from leaderboard.submission import SubmissionRejected, add_entry, pack, validated


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quality")
    config = load_config(None, {"methods": [{"name": "baseline"}, {"name": "difflens"}], "classifiers": ["world"],
                                "max_prompts": 4, "images_per_prompt": 8, "metrics": {"bootstrap": 20},
                                "output_dir": str(root / "results"), "cache_dir": str(root / "cache")})
    return pack(run(config, progress=False), root / "good.zip")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _repack(good: Path, out: Path, **changed: bytes) -> Path:
    """The good bundle with some members replaced (``features`` for features.safetensors, ``results``
    for results.json) and the manifest's hashes updated, as a forger would."""
    files = _members(good)
    for key, data in changed.items():
        files[{"features": FEATURES_FILE, "results": "results.json"}[key]] = data
    manifest = json.loads(files.pop("manifest.json"))
    manifest["files"] = {n: hash_bytes(b) for n, b in files.items()}
    with zipfile.ZipFile(out, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
        zf.writestr("manifest.json", json.dumps(manifest))
    return out


def _without(good: Path, out: Path, name: str) -> Path:
    files = _members(good)
    files.pop(name)
    manifest = json.loads(files.pop("manifest.json"))
    manifest["files"].pop(name)
    with zipfile.ZipFile(out, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
        zf.writestr("manifest.json", json.dumps(manifest))
    return out


def _rejected(path: Path, tmp_path: Path) -> SubmissionRejected:
    with pytest.raises(SubmissionRejected) as info:
        add_entry(path, tmp_path / "entries")
    assert not (tmp_path / "entries").exists() or not any((tmp_path / "entries").iterdir())
    return info.value


def test_quality_records_are_recomputed_and_thumbnails_checked(bundle: Path, tmp_path: Path) -> None:
    with validated(bundle) as ok:
        pairs = {(r["metric"], r["variant"]) for r in ok.results["metrics"] if r.get("classifier") is None}
        assert {("fid", "vs-reference"), ("kid", "vs-baseline"), ("delta_fid", "vs-reference"), ("clip_t", "mean"),
                ("delta_clip_t", "mean"), ("clip_i", "vs-baseline")} <= pairs
        assert ok.verified_metrics == len(ok.results["metrics"]) - 4  # all but the cost records
        assert ok.reported_metrics == ["unet_evals/per-image", "unet_evals/vs-baseline"]
        assert ok.thumbnails_checked == 2 * 4 * 8
    entry = add_entry(bundle, tmp_path / "entries")
    info = json.loads((entry / "entry.json").read_text())
    assert info["reported_metrics"] == ["unet_evals/per-image", "unet_evals/vs-baseline"]
    assert (entry / FEATURES_FILE).is_file()


def _results(bundle: Path) -> dict:
    return json.loads(_members(bundle)["results.json"])


@pytest.mark.parametrize("metric, variant", [("fid", "vs-reference"), ("kid", "vs-baseline"),
                                             ("delta_fid", "vs-reference"), ("clip_t", "mean"), ("clip_i", "vs-baseline")])
def test_a_changed_quality_number_is_refused(bundle: Path, tmp_path: Path, metric: str, variant: str) -> None:
    results = _results(bundle)
    rec = next(r for r in results["metrics"] if r["metric"] == metric and r["variant"] == variant)
    rec["value"] *= 0.9
    err = _rejected(_repack(bundle, tmp_path / "b.zip", results=json.dumps(results).encode()), tmp_path)
    assert err.rule == "quality" and FEATURES_FILE in err.detail


def test_an_unknown_or_unlabelled_metric_is_refused(bundle: Path, tmp_path: Path) -> None:
    results = _results(bundle)
    rec = dict(next(r for r in results["metrics"] if r["metric"] == "fid"))
    results["metrics"].append({**rec, "metric": "fid_magic"})
    err = _rejected(_repack(bundle, tmp_path / "b.zip", results=json.dumps(results).encode()), tmp_path)
    assert err.rule == "quality" and "fid_magic" in err.detail
    results = _results(bundle)
    rec = dict(next(r for r in results["metrics"] if r["metric"] == "fid"))
    results["metrics"].append({**rec, "classifier": "world", "attribute": "color"})  # hides as a fairness record
    assert _rejected(_repack(bundle, tmp_path / "c.zip", results=json.dumps(results).encode()), tmp_path).rule \
        == "unverifiable-metric"


def test_a_dropped_quality_record_is_refused(bundle: Path, tmp_path: Path) -> None:
    results = _results(bundle)
    drop = next(i for i, r in enumerate(results["metrics"]) if r["metric"] == "clip_t" and r["prompt_id"])
    del results["metrics"][drop]
    err = _rejected(_repack(bundle, tmp_path / "b.zip", results=json.dumps(results).encode()), tmp_path)
    assert "not reported" in err.detail


def test_a_world_bundle_without_features_is_refused(bundle: Path, tmp_path: Path) -> None:
    err = _rejected(_without(bundle, tmp_path / "b.zip", FEATURES_FILE), tmp_path)
    assert err.rule == "quality" and "missing" in err.detail


def _forge_features(bundle: Path, tmp_path: Path, change) -> bytes:
    from safetensors import safe_open
    from safetensors.numpy import load, save

    raw = _members(bundle)[FEATURES_FILE]
    path = tmp_path / "f.safetensors"
    path.write_bytes(raw)
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["debias_bench"])
    tensors = load(raw)
    change(tensors, meta)
    return save(tensors, metadata={"debias_bench": json.dumps(meta)})


@pytest.mark.parametrize("change, words", [
    (lambda t, m: t.update(features=t["features"][:-1]), "rows"),
    (lambda t, m: t["embeddings"].__setitem__((0, 0), np.nan), "finite"),
    (lambda t, m: t.update(features=t["features"].astype(np.float64)), "float32"),
    (lambda t, m: m.update(features_fingerprint="0" * 12), "registered world CLIP"),
    (lambda t, m: t["texts"].__setitem__(0, t["texts"][1]), "text embedding"),
])
def test_malformed_or_foreign_features_are_refused(bundle: Path, tmp_path: Path, change, words: str) -> None:
    forged = _forge_features(bundle, tmp_path, change)
    err = _rejected(_repack(bundle, tmp_path / "b.zip", features=forged), tmp_path)
    assert err.rule == "quality" and words in err.detail


def test_a_truncated_features_file_is_one_line(bundle: Path, tmp_path: Path) -> None:
    raw = _members(bundle)[FEATURES_FILE]
    err = _rejected(_repack(bundle, tmp_path / "b.zip", features=raw[: len(raw) // 2]), tmp_path)
    assert err.rule == "quality" and "unreadable" in err.detail and "\n" not in str(err)


def test_a_consistent_forgery_of_features_and_numbers_is_caught_by_the_thumbnails(bundle: Path, tmp_path: Path) -> None:
    """Features shifted for one method, every quality number recomputed from them: the numbers agree
    with the file, but the thumbnails' pictures give other features."""
    import pandas as pd

    results = _results(bundle)
    pred = pd.read_parquet(io.BytesIO(_members(bundle)["predictions.parquet"]))
    rows = (pred["method"] == "difflens").to_numpy()

    def shift(t: dict, m: dict) -> None:
        t["features"][rows] *= np.float32(0.5)

    forged = _forge_features(bundle, tmp_path, shift)
    path = tmp_path / "forged.safetensors"
    path.write_bytes(forged)
    fresh = {(r["method"], r["prompt_set"], r["prompt_id"], r["metric"], r["variant"]): r
             for r in recompute(results, pred, load_vectors(path, len(pred)), registered_world(results).reference)}
    changed = 0
    for rec in results["metrics"]:
        key = (rec["method"], rec["prompt_set"], rec["prompt_id"], rec["metric"], rec["variant"])
        if rec.get("classifier") is None and key in fresh:
            changed += rec["value"] != fresh[key]["value"]
            rec.update({k: fresh[key].get(k) for k in ("value", "ci_low", "ci_high", "p_value") if k in rec})
    assert changed >= 3  # FID vs reference and baseline, ΔFID moved
    err = _rejected(_repack(bundle, tmp_path / "b.zip", features=forged, results=json.dumps(results).encode()),
                    tmp_path)
    assert err.rule == "quality" and "recomputed from the picture" in err.detail and "FID features" in err.detail


def test_a_run_with_its_own_reference_statistics_gets_no_registered_reference(bundle: Path) -> None:
    results = _results(bundle)
    assert registered_world(results).reference is not None
    own = {**results, "config": {**results["config"], "reference_stats": "stats.npz"}}
    world = registered_world(own)
    assert world.reference is None and set(world.classifiers) == {"world"}  # vs-reference: shown as reported
    assert registered_world({**results, "models": {**results["models"], "profile": "real"}}) is None


def test_a_world_bundle_must_show_every_method_and_name_a_known_variant(bundle: Path, tmp_path: Path) -> None:
    files = _members(bundle)
    manifest = json.loads(files.pop("manifest.json"))
    dropped = {t["file"] for t in manifest["thumbnails"] if t["method"] == "difflens"}
    manifest["thumbnails"] = [t for t in manifest["thumbnails"] if t["file"] not in dropped]
    files = {n: b for n, b in files.items() if n not in dropped}
    manifest["files"] = {n: hash_bytes(b) for n, b in files.items()}
    out = tmp_path / "b.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
        zf.writestr("manifest.json", json.dumps(manifest))
    err = _rejected(out, tmp_path)
    assert err.rule == "quality" and "none for method 'difflens'" in err.detail
    results = _results(bundle)
    results["models"]["profile"] = "world:made-up"
    err = _rejected(_repack(bundle, tmp_path / "c.zip", results=json.dumps(results).encode()), tmp_path)
    assert "not a world variant" in err.detail


def test_the_quality_check_in_a_second_process_gives_the_same_verdict(bundle: Path, tmp_path: Path) -> None:
    """`leaderboard add` runs the quality check beside the fairness recompute (leaderboard.quality_ahead):
    the same counts for a good bundle, the same one-line refusal for a forged number, no process left."""
    import multiprocessing

    from leaderboard.quality_ahead import QualityAhead, in_process

    with validated(bundle) as here, QualityAhead() as ahead, validated(bundle, quality=ahead.start) as there:
        assert (there.verified_metrics, there.reported_metrics, there.thumbnails_checked) == \
            (here.verified_metrics, here.reported_metrics, here.thumbnails_checked)
    results = _results(bundle)
    next(r for r in results["metrics"] if r["metric"] == "clip_t")["value"] *= 0.9
    forged = _repack(bundle, tmp_path / "b.zip", results=json.dumps(results).encode())
    with QualityAhead() as ahead, pytest.raises(SubmissionRejected) as info:
        add_entry(forged, tmp_path / "entries", quality=ahead.start)
    assert info.value.rule == "quality" and FEATURES_FILE in info.value.detail
    assert multiprocessing.active_children() == [] and not (tmp_path / "entries").exists()
    import pandas as pd

    with validated(bundle) as ok:  # one QualityAhead, two checks, the first never waited for
        pred = pd.read_parquet(ok.root / "predictions.parquet")
        want = in_process(ok.root, ok.results, pred, ok.manifest)()
        with QualityAhead() as ahead:
            ahead.start(ok.root, ok.results, pred, ok.manifest)
            got = ahead.start(ok.root, ok.results, pred, ok.manifest)()
            assert (got.verified, got.thumbnails_checked) == (want.verified, want.thumbnails_checked)
        assert multiprocessing.active_children() == []


def test_a_second_process_that_cannot_answer_leaves_the_check_to_this_one(bundle: Path, monkeypatch, caplog) -> None:
    """A worker that dies (or cannot start) neither accepts nor rejects: the check runs here instead."""
    import leaderboard.quality_ahead as qa

    with validated(bundle) as here:
        want = (here.verified_metrics, here.thumbnails_checked)
    monkeypatch.setattr(qa, "_check", _die)
    with qa.QualityAhead() as ahead, validated(bundle, quality=ahead.start) as there:
        assert (there.verified_metrics, there.thumbnails_checked) == want
    assert "exit code 3" in caplog.text  # it died, and the check ran here

    def no_processes(method):
        raise OSError("no processes here")

    monkeypatch.setattr(qa.multiprocessing, "get_context", no_processes)
    with qa.QualityAhead() as ahead, validated(bundle, quality=ahead.start) as there:
        assert (there.verified_metrics, there.thumbnails_checked) == want


def _die(conn, *args) -> None:  # a worker killed before it answers
    import os

    os._exit(3)


def test_the_second_process_runs_on_one_thread() -> None:
    """Two BLAS or torch threads in the quality check's process would spin against the main process's
    core (measured: 4.6 s of CPU for the check's numbers instead of 2.8 s)."""
    import subprocess
    import sys

    code = ("import numpy; from leaderboard.quality_ahead import _one_thread; _one_thread(); import torch; "
            "from threadpoolctl import threadpool_info; "
            "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "[1]"]
