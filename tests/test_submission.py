"""Packing, validating and merging bundles, and the `submit` / `leaderboard` commands."""

from __future__ import annotations

import argparse
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from hostile_bundles import good_files, write_tar
from leaderboard_runs import make_run

from benchmark.errors import BenchError
from leaderboard import cli
from leaderboard.submission import SubmissionRejected, add_entry, entry_dirs, pack, validate_bundle


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "a": make_run(root, "run-a", methods={"baseline": 0.3, "ddm": 0.05}, n=12, n_boot=20),
        "b": make_run(root, "run-b", methods={"selfdebias": 0.1}, n=12, n_boot=20, seed=1),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="debias-bench")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_pack_writes_a_bundle_with_hashes_and_thumbnail_index(runs: dict[str, Path], tmp_path: Path) -> None:
    bundle = pack(runs["a"], tmp_path / "a.zip")
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert {"results.json", "predictions.parquet", "manifest.json"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    thumbs = manifest["thumbnails"]
    assert len(thumbs) == 2 * 3 * 2  # 2 methods × 3 prompts × 2 images
    assert {t["method"] for t in thumbs} == {"baseline", "ddm"}
    assert validate_bundle(bundle)["run_id"] == "run-a"


def test_validation_recomputes_every_fairness_record(runs: dict[str, Path], tmp_path: Path) -> None:
    entry = add_entry(pack(runs["a"], tmp_path / "a.zip"), tmp_path / "entries")
    info = json.loads((entry / "entry.json").read_text())
    results = json.loads((runs["a"] / "results.json").read_text())
    fairness = [r for r in results["metrics"] if r["classifier"] is not None]
    assert any(r["metric"] == "no_subject_rate" for r in fairness)
    assert info["verified_metrics"] == len(fairness) > 100


def test_add_then_duplicate_and_build(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Figures are covered by test_leaderboard_html; drawing them again here would only cost time.
    monkeypatch.setattr("leaderboard.html.all_figures", lambda *a: ([], []))
    entries = tmp_path / "entries"
    bundle_a = pack(runs["a"], tmp_path / "a.zip")
    add_entry(bundle_a, entries)  # the command below adds the second entry and rebuilds the page once
    assert _main(["leaderboard", "add", str(pack(runs["b"], tmp_path / "b.zip")), "--entries", str(entries)]) == 0
    assert [d.name for d in entry_dirs(entries)] == ["run-a", "run-b"]
    page = (tmp_path / "site" / "index.html").read_text()
    for method in ("baseline", "ddm", "selfdebias"):
        assert f">{method}<" in page
    assert (tmp_path / "site" / "tables" / "synth-synthclf-color-fd.csv").is_file()
    with pytest.raises(SubmissionRejected, match=r"\[duplicate-entry\]"):
        add_entry(bundle_a, entries)
    # The same results under another file name are still a duplicate.
    copy = tmp_path / "renamed.zip"
    copy.write_bytes(bundle_a.read_bytes())
    with pytest.raises(SubmissionRejected, match=r"\[duplicate-entry\]"):
        add_entry(copy, entries)
    assert not [p for p in entries.iterdir() if p.name.startswith(".")]


def test_the_same_run_in_another_archive_format_is_a_duplicate(runs: dict[str, Path], tmp_path: Path) -> None:
    entries = tmp_path / "entries"
    add_entry(pack(runs["a"], tmp_path / "a.zip"), entries)
    with pytest.raises(SubmissionRejected, match=r"\[duplicate-entry\]"):
        add_entry(write_tar(tmp_path / "a.tar.gz", good_files(runs["a"])), entries)


def test_the_same_predictions_under_another_run_id_are_a_duplicate(runs: dict[str, Path], tmp_path: Path) -> None:
    """A faithful rerun (or a copy) of an entry renamed to a new run id is refused: same predictions."""
    import shutil

    entries = tmp_path / "entries"
    add_entry(pack(runs["a"], tmp_path / "a.zip"), entries)
    copy = tmp_path / "run-copy"
    shutil.copytree(runs["a"], copy)
    results = json.loads((copy / "results.json").read_text())
    results["run_id"] = "run-copy"
    (copy / "results.json").write_text(json.dumps(results))
    with pytest.raises(SubmissionRejected, match=r"same predictions are already on the leaderboard as 'run-a'"):
        add_entry(pack(copy, tmp_path / "copy.zip"), entries)


def test_tar_gz_bundles_are_accepted(runs: dict[str, Path], tmp_path: Path) -> None:
    bundle = write_tar(tmp_path / "b.tar.gz", good_files(runs["b"]))
    with tarfile.open(bundle) as tf:
        assert "manifest.json" in tf.getnames()
    assert add_entry(bundle, tmp_path / "entries").name == "run-b"


def test_prompt_set_mismatch_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    entries = tmp_path / "entries"
    add_entry(pack(runs["a"], tmp_path / "a.zip"), entries)
    other = make_run(tmp_path, "run-c", methods={"x": 0.1}, n=12, n_boot=20)
    results = json.loads((other / "results.json").read_text())
    results["prompt_sets"]["synth"]["fingerprint"] = "e" * 64
    (other / "results.json").write_text(json.dumps(results))
    with pytest.raises(SubmissionRejected, match=r"\[prompt-set-mismatch\]"):
        add_entry(pack(other, tmp_path / "c.zip"), entries)
    assert [d.name for d in entry_dirs(entries)] == ["run-a"]


def test_submit_command_checks_the_run(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _main(["submit", str(runs["b"]), "--out", str(tmp_path / "b.zip")]) == 0
    assert "bundle:" in capsys.readouterr().out
    bad = make_run(tmp_path, "run-bad", methods={"x": 0.1}, n=12, n_boot=20)
    results = json.loads((bad / "results.json").read_text())
    next(r for r in results["metrics"] if r["metric"] == "fd")["value"] += 0.01
    (bad / "results.json").write_text(json.dumps(results))
    with pytest.raises(SubmissionRejected, match=r"\[metric-mismatch\]"):
        _main(["submit", str(bad), "--out", str(tmp_path / "bad.zip")])
    assert not (tmp_path / "bad.zip").exists() and not list(tmp_path.glob(".bad.zip*"))
    with pytest.raises(BenchError, match="run directory not found"):
        _main(["submit", str(tmp_path / "nope")])


def test_leaderboard_cli_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="bundle not found"):
        _main(["leaderboard", "add", str(tmp_path / "missing.zip"), "--entries", str(tmp_path / "e")])
    with pytest.raises(BenchError, match="takes no bundle"):
        _main(["leaderboard", "build", "x.zip", "--entries", str(tmp_path / "e")])
