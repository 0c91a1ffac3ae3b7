"""The headline: which method is fairest on each attribute, at what cost, in 100 columns."""

from __future__ import annotations

from pathlib import Path

from benchmark.headline import headline_frame, headline_table
from benchmark.report import load_results

ENTRY = next((Path(__file__).resolve().parents[1] / "leaderboard" / "entries").glob("world-*"))


def test_headline_is_sorted_by_fd_and_pairs_every_method_with_the_baseline() -> None:
    results = load_results(ENTRY)
    frame = headline_frame(results, "world", "color")
    assert list(frame["fd"]) == sorted(frame["fd"])
    assert set(frame["method"]) == {"baseline", "ddm", "invdiff", "selfdebias", "difflens"}
    others = frame[frame["method"] != "baseline"]
    assert others["delta"].notna().all() and (others["delta_low"] <= others["delta"]).all()
    assert (others["delta"] <= others["delta_high"]).all() and others["p"].between(0, 1).all()
    base = frame[frame["method"] == "baseline"].iloc[0]
    assert base["fid_ratio"] == 1.0 and base["delta"] != base["delta"]  # no change against itself (NaN)


def test_headline_table_fits_100_columns() -> None:
    text = headline_table(load_results(ENTRY))
    assert "world · color · classifier world" in text and "world · shade · classifier world" in text
    assert max(len(line) for line in text.splitlines()) <= 100
