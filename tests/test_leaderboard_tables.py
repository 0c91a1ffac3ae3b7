"""Leaderboard tables: one per metric and attribute, ranked in the declared direction, exported four ways."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_runs import make_run

from leaderboard.rundir import Run, load_run
from leaderboard.tables import build_tables, combined_metrics, to_csv, to_json, to_latex, to_markdown, write_tables


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    root = tmp_path_factory.mktemp("tables")
    a = load_run(make_run(root, "run-a", methods={"baseline": 0.35, "a|b_&$x": 0.02}, n=20, n_boot=30))
    b = load_run(make_run(root, "run-b", methods={"baseline": 0.3, "ddm": 0.1}, n=20, n_boot=30, seed=4))
    a.entry_id, b.entry_id = "run-a", "run-b"
    return [a, b]


def _table(tables, metric: str, attribute: str | None):
    return next(t for t in tables if t.metric == metric and t.attribute == attribute)


def test_one_table_per_metric_and_attribute(runs: list[Run]) -> None:
    tables = build_tables(runs)
    keys = {(t.metric, t.attribute) for t in tables}
    for attr in ("color", "shade", "color×shade"):
        assert ("fd", attr) in keys and ("entropy", attr) in keys
    assert ("fid", None) in keys and ("clip_t", None) in keys
    assert len(keys) == len(tables)
    assert tables[0].family == "fairness"  # fairness tables lead


def test_every_title_is_distinct_and_names_its_classifier(runs: list[Run]) -> None:
    """A metric without an attribute but with a classifier (the no-subject rate) gets a table per
    classifier; each title names it (world and world-weak had two identical titles)."""
    run = runs[0]
    twin = [{**r, "classifier": "synthclf-weak"} for r in run.results["metrics"] if r["metric"] == "no_subject_rate"]
    doubled = Run(run.path, {**run.results, "metrics": run.results["metrics"] + twin})
    doubled.entry_id = run.entry_id
    tables = build_tables([doubled])
    titles = [t.title for t in tables]
    assert len(set(titles)) == len(titles)
    assert {t.title for t in tables if t.metric == "no_subject_rate"} == {
        "synth · classifier synthclf · no-subject rate (lower is better)",
        "synth · classifier synthclf-weak · no-subject rate (lower is better)"}


def test_rows_ranks_and_intervals(runs: list[Run]) -> None:
    tables = build_tables(runs)
    fd = _table(tables, "fd", "color")
    # baseline is in both runs, so it is told apart by entry; the others keep their plain name.
    assert set(fd.frame.index) == {"baseline · run-a", "baseline · run-b", "a|b_&$x", "ddm"}
    assert fd.headline == "soft" and fd.variants[0] == "soft" and "hard" in fd.variants
    assert not fd.higher_is_better
    soft = fd.frame["soft"]
    assert fd.frame["rank"].tolist() == soft.rank(method="min").tolist()
    assert fd.frame.index[0] == soft.idxmin()
    assert (fd.frame["soft ci_low"] <= fd.frame["soft ci_high"]).all()
    ent = _table(tables, "entropy", "color")
    assert ent.higher_is_better and ent.frame.index[0] == ent.frame["soft"].idxmax()
    # Per-prompt breakdown: the prompts that aim at the target (the named prompt feeds only SPD).
    assert list(fd.per_prompt.columns) == ["glyph", "seven"]
    df = combined_metrics(runs)
    rec = df[(df["row"] == "ddm") & (df["metric"] == "fd") & (df["variant"] == "soft") & (df["attribute"] == "color")
             & (df["prompt_id"] == "seven")]
    assert fd.per_prompt.loc["ddm", "seven"] == pytest.approx(rec["value"].item())


def test_exports(runs: list[Run], tmp_path: Path) -> None:
    tables = build_tables(runs)
    fd = _table(tables, "fd", "color")
    back = pd.read_csv(io.StringIO(to_csv(fd)), index_col=0)
    assert back["soft"].to_numpy() == pytest.approx(fd.frame["soft"].to_numpy(), rel=1e-5)
    doc = json.loads(to_json(fd))
    assert doc["metric"] == "fd" and doc["higher_is_better"] is False and doc["headline"] == "soft"
    assert {r["method"] for r in doc["rows"]} == set(fd.frame.index)
    md = to_markdown(fd)
    lines = md.splitlines()
    assert lines[2].startswith("| method | rank | soft | hard")
    assert all(line.count(" | ") == lines[2].count(" | ") for line in lines[4:])
    assert r"a\|b_&amp;$x" in md  # the pipe cannot split a row, HTML is escaped
    tex = to_latex(fd)
    assert r"a|b\_\&\$x" in tex and r"\toprule" in tex and r"\textbf{" in tex
    written = write_tables(tables, tmp_path)
    assert (tmp_path / "synth-synthclf-color-fd.tex") in written
    assert (tmp_path / "synth-synthclf-color-fd.per-prompt.csv").is_file()
    assert (tmp_path / "tables.md").read_text().count("**synth") == len(tables)


def test_csv_cells_cannot_become_spreadsheet_formulas() -> None:
    import pandas as pd

    from leaderboard.tables import safe_csv

    frame = pd.DataFrame({"note": ["=HYPERLINK(1)", "plain", "-1+2", "@SUM(A1)"], "value": [-0.5, 1.0, 2.0, 3.0]},
                         index=pd.Index(["+evil", "baseline", "ddm", "x"], name="method"))
    text = safe_csv(frame)
    assert "'=HYPERLINK(1)" in text and "'-1+2" in text and "'@SUM(A1)" in text and "'+evil" in text
    assert ",-0.5" in text  # numbers stay numbers


def test_the_validator_accepts_no_results_file_the_page_builder_refuses() -> None:
    from leaderboard.rundir import MAX_RESULTS_BYTES
    from leaderboard.submission import DEFAULT_LIMITS

    assert DEFAULT_LIMITS.max_json_bytes <= MAX_RESULTS_BYTES
