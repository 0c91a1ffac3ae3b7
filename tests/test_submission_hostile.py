"""Every hostile or malformed bundle is refused with its own one-line reason and leaves no trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_bundles import CASES, good_files, write_zip
from leaderboard_runs import make_run

from leaderboard.submission import SubmissionRejected, add_entry


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("good")
    return good_files(make_run(root, methods={"baseline": 0.3, "ddm": 0.05}, n=12, n_boot=20))


def test_corpus_is_large_and_reasons_are_distinct() -> None:
    assert len(CASES) >= 20
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({(c.rule, c.phrase) for c in CASES}) == len(CASES)


def test_the_unmodified_bundle_is_accepted(good: dict[str, bytes], tmp_path: Path) -> None:
    # The corpus is only meaningful if its starting point passes.
    entry = add_entry(write_zip(tmp_path / "ok.zip", good), tmp_path / "entries")
    assert (entry / "results.json").read_bytes() == good["results.json"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_bundle_is_rejected(case, good: dict[str, bytes], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bundle = case.build(dict(good), work)
    entries = tmp_path / "entries"
    entries.mkdir()
    with pytest.raises(SubmissionRejected) as info:
        add_entry(bundle, entries, limits=case.limits)
    message = str(info.value)
    assert info.value.rule == case.rule, message
    assert case.phrase in message, message
    assert "\n" not in message and message.startswith(f"{bundle.name}: rejected [{case.rule}]")
    assert list(entries.iterdir()) == []
    # Nothing escaped next to the bundle or into absolute paths named by members.
    assert not (tmp_path / "escaped.json").exists()
    assert not Path("/tmp/debias-bench-absolute.json").exists()
    assert sorted(p.name for p in work.iterdir()) == [bundle.name]
