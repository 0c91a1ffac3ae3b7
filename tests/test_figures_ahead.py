"""`leaderboard add` draws the page's figures in a second process while the bundle is re-verified
(leaderboard.figures_ahead): the page is the one a plain build writes, the figures are not drawn twice,
and a rejected bundle stops the drawing and leaves the site as it was."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from hostile_bundles import good_files, write_zip
from leaderboard_runs import make_run

from leaderboard.cli import cmd_leaderboard
from leaderboard.html import FIGURE_CACHE, build_leaderboard
from leaderboard.submission import SubmissionRejected, add_entry, pack


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"a": make_run(root, "run-a", methods={"baseline": 0.3, "ddm": 0.05}, n=12, n_boot=20),
            "b": make_run(root, "run-b", methods={"selfdebias": 0.1}, n=12, n_boot=20, seed=1)}


def _add(bundle: Path, entries: Path, out: Path) -> int:
    import argparse

    return cmd_leaderboard(argparse.Namespace(action="add", bundle=str(bundle), entries=str(entries), out=str(out),
                                              leaderboard=str(entries.parent)))


def test_the_figures_drawn_ahead_make_the_page_a_plain_build_makes(runs, tmp_path, monkeypatch) -> None:
    entries, site = tmp_path / "entries", tmp_path / "site"
    add_entry(pack(runs["a"], tmp_path / "a.zip"), entries)
    drawn_here = []
    import leaderboard.html as html

    original = html.tradeoff_figures
    monkeypatch.setattr(html, "tradeoff_figures", lambda *a: drawn_here.append(1) or original(*a))
    assert _add(pack(runs["b"], tmp_path / "b.zip"), entries, site) == 0
    assert drawn_here == []  # the page found every figure in the memo the second process wrote
    ahead = (site / "index.html").read_bytes()
    (site / FIGURE_CACHE).unlink()
    build_leaderboard(entries, site)
    assert drawn_here == [1] and (site / "index.html").read_bytes() == ahead


def test_a_rejected_bundle_stops_the_drawing_and_leaves_the_site_alone(runs, tmp_path, monkeypatch) -> None:
    from leaderboard.figures_ahead import FiguresAhead

    started = []
    original = FiguresAhead.start
    monkeypatch.setattr(FiguresAhead, "start", lambda self, *a: started.append(1) or original(self, *a))
    entries, site = tmp_path / "entries", tmp_path / "site"
    add_entry(pack(runs["a"], tmp_path / "a.zip"), entries)
    build_leaderboard(entries, site)
    before = {p.name: p.read_bytes() for p in site.iterdir() if p.is_file()}
    files = good_files(runs["b"])
    results = json.loads(files["results.json"])
    next(r for r in results["metrics"] if r["metric"] == "fd")["value"] += 0.01  # found only by the recompute
    bad = write_zip(tmp_path / "bad.zip", {**files, "results.json": json.dumps(results).encode()})
    with pytest.raises(SubmissionRejected, match=r"\[metric-mismatch\]"):
        _add(bad, entries, site)
    assert started == [1] and multiprocessing.active_children() == []
    assert {p.name: p.read_bytes() for p in site.iterdir() if p.is_file()} == before
    assert [p.name for p in entries.iterdir()] == ["run-a"]


def test_adding_the_same_bundle_twice_is_still_a_duplicate_entry(runs, tmp_path) -> None:
    """The drawing ahead links every existing entry beside the new one; an existing entry with the
    new run id must leave the rejection to the duplicate check, not break the add."""
    entries, site = tmp_path / "entries", tmp_path / "site"
    bundle = pack(runs["a"], tmp_path / "a.zip")
    add_entry(bundle, entries)
    with pytest.raises(SubmissionRejected, match=r"\[duplicate-entry\]"):
        _add(bundle, entries, site)
    assert multiprocessing.active_children() == []


def test_a_failure_to_draw_ahead_does_not_stop_the_add(runs, tmp_path, monkeypatch) -> None:
    from leaderboard.figures_ahead import FiguresAhead

    monkeypatch.setattr(FiguresAhead, "_start", lambda *a: (_ for _ in ()).throw(OSError("no symlinks here")))
    entries, site = tmp_path / "entries", tmp_path / "site"
    assert _add(pack(runs["b"], tmp_path / "b.zip"), entries, site) == 0
    assert (entries / "run-b").is_dir() and (site / "index.html").is_file()
