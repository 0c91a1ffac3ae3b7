"""The page's per-method view: every study's settings of a method on one front, the paper preset told
apart from the world defaults, and the worst FD over the sampler grids; figures drawn once per content."""

from __future__ import annotations

import json
from pathlib import Path

from leaderboard import method_fronts
from leaderboard.figure_memo import FigureMemo
from leaderboard.method_fronts import method_rows, method_views, robustness_rows

RUN = {"prompt_sets": ["world"], "max_prompts": 10}
MEASURE = {"attribute": "color", "classifier": "world", "variant": "soft"}


def _row(label, method, fd, fid, clip=55.0, knobs=None, preset="defaults", sampler=None):
    return {"label": label, "method": method, "preset": preset, "knobs": knobs or {}, "sampler": sampler or {},
            "fd": fd, "fd_low": fd / 2, "fd_high": fd * 1.5, "delta_fd": None if method == "baseline" else fd - 0.3,
            "delta_low": -0.2, "delta_high": 0.0, "fid": fid, "clip_t": clip}


def _study(name, rows, run=RUN, sampler=None):
    return {"study": {"name": name, "run": run, "measure": MEASURE, "sampler": sampler or {}}, "rows": rows}


def _studies():
    base = _row("baseline", "baseline", 0.30, 3.0, 60.0)
    knob = _study("lens-k", [base, _row("lens-k40", "lens", 0.20, 2.5, knobs={"k": 40}),
                             _row("lens-k80", "lens", 0.08, 2.6, knobs={"k": 80}),
                             _row("lens-k100", "lens", 0.09, 3.5, knobs={"k": 100})])
    paper = _study("lens-paper", [base, _row("lens", "lens", 0.08, 2.6),  # the same images as k 80
                                  _row("lens-paper", "lens", 0.25, 9.0, 20.0, preset="paper")])
    other = _study("seeds", [_row("baseline", "baseline", 0.35, 4.0), _row("lens-seed1", "lens", 0.07, 3.0,
                                                                            knobs={"seed": 1})], run={"prompt_sets": ["world"]})
    guidance = _study("guidance", [_row("baseline", "baseline", b, 3.0, sampler={"guidance_scale": g})
                                   for g, b in ((1.5, 0.30), (3.0, 0.32), (5.0, 0.18))]
                      + [_row("lens", "lens", f, 4.0, sampler={"guidance_scale": g})
                         for g, f in ((1.5, 0.08), (3.0, 0.12), (5.0, 0.10))], sampler={"guidance_scale": [1.5, 3.0, 5.0]})
    return [knob, paper, other, guidance]


def test_a_methods_settings_from_every_comparable_study_share_one_front() -> None:
    scopes = method_rows(_studies())["lens"]
    assert len(scopes) == 2  # the 10-prompt studies and the whole-set one are kept apart (other baselines)
    rows = max(scopes.values(), key=len)
    labels = [r["label"] for r in rows]
    assert labels == ["baseline", "lens-k40", "lens-k80", "lens-k100", "lens-paper"]  # "lens" = k 80, kept once
    by = {r["label"]: r for r in rows}
    assert by["lens-k80"]["studies"] == ["lens-k", "lens-paper"]
    assert by["lens-paper"]["kind"] == "paper" and by["lens-k40"]["kind"] == "world defaults, k 40"
    assert by["baseline"]["kind"] == "baseline"
    # FD–FID front: k80 (0.08, 2.6) dominates k100 (0.09, 3.5) and paper (0.25, 9.0); k40 (0.20, 2.5) is cheaper
    assert {r["label"] for r in rows if r["on_fid_front"]} == {"lens-k40", "lens-k80"}


def test_the_worst_fd_over_the_sampler_grid_is_the_methods_and_names_where() -> None:
    (view,) = method_views(_studies())
    assert view["worst"] == "0.120 (at 3) in guidance"
    assert view["robustness"]["rows"] == [["guidance", "guidance scale", "1.5, 3, 5", "0.120 (at 3)", "0.080", "0.320"]]
    points = robustness_rows(_studies())["lens"]
    assert [p["baseline_fd"] for p in points] == [0.30, 0.32, 0.18]
    assert [row[0] for row in view["rows"]] == ["baseline", "world defaults, k 80 *", "world defaults, k 100",
                                                "world defaults, k 40 *", "paper"]
    assert view["rows"][0][-1] == "every study (2)" and view["rows"][1][-1] == "lens-k, lens-paper"


def test_figures_are_drawn_once_per_content(tmp_path: Path, monkeypatch) -> None:
    drawn = []
    monkeypatch.setattr(method_fronts, "_front_figure", lambda m, rows, r: drawn.append(m) or {"title": m, "uri": "x"})
    monkeypatch.setattr(method_fronts, "_robustness_figure", lambda m, points, r: {"title": m, "uri": "y"})
    path = tmp_path / "memo.json"
    for _ in range(2):
        memo = FigureMemo(path)
        method_views(_studies(), render=object(), memo=memo)
        memo.save()
    assert drawn == ["lens"]
    studies = _studies()
    studies[0]["rows"][1]["fd"] = 0.19  # new content: drawn again
    memo = FigureMemo(path)
    method_views(studies, render=object(), memo=memo)
    assert drawn == ["lens", "lens"]
    assert len(json.loads(path.read_text())) == 1  # the saved memo held only the figure sets in use


def test_the_method_views_are_built_once_per_content_of_the_studies(tmp_path: Path, monkeypatch) -> None:
    """Building them reads every method's defaults (importing the methods and torch): a page rebuilt with
    the same studies takes them from the memo beside it, the same page; a changed study builds them again."""
    import leaderboard.html as page

    built = []
    real = page.method_views
    monkeypatch.setattr(page, "method_views", lambda *a, **k: built.append(1) or real(*a, **k))
    monkeypatch.setattr(method_fronts, "_front_figure", lambda m, rows, r: {"title": m, "uri": "x"})
    monkeypatch.setattr(method_fronts, "_robustness_figure", lambda m, points, r: {"title": m, "uri": "y"})
    studies = [{**s, "file": f"{s['study']['name']}.json"} for s in _studies()]
    cache = tmp_path / page.FIGURE_CACHE
    first, _ = page.render_page([], studies=studies, figure_cache=cache)
    again, _ = page.render_page([], studies=studies, figure_cache=cache)
    assert built == [1] and again == first and "world defaults, k 80 *" in first
    studies[0]["rows"][1]["fd"] = 0.19
    changed, _ = page.render_page([], studies=studies, figure_cache=cache)
    assert built == [1, 1] and changed != first
    studies[0]["file"] = "renamed.json"  # anything of a study, not only its rows, is part of the key
    page.render_page([], studies=studies, figure_cache=cache)
    assert built == [1, 1, 1]


def test_the_page_shows_a_section_per_method(tmp_path: Path) -> None:
    from leaderboard.html import render_page

    html, _ = render_page([], studies=[{**s, "file": f"{s['study']['name']}.json"} for s in _studies()])
    assert '<h2 id="methods">' in html and '<h3 id="method-lens">' in html
    assert "Worst FD over the sampler grids: <strong>0.120 (at 3) in guidance</strong>" in html
    assert "lens: FD against FID and against CLIP-T, every studied setting" in html


def test_a_grid_point_at_the_methods_default_values_is_the_world_default() -> None:
    from leaderboard.method_fronts import setting_kind

    assert setting_kind({"method": "difflens", "knobs": {"features_per_class": 80}}) == "world defaults"
    assert setting_kind({"method": "difflens", "knobs": {"features_per_class": 40}}) == "world defaults, features per class 40"
    assert setting_kind({"method": "ddm", "preset": "paper", "knobs": {}}) == "paper"


def test_across_methods_one_front_says_which_method_holds_which_part() -> None:
    from leaderboard.method_fronts import across_methods

    studies = _studies()
    studies[0]["rows"] += [_row("push-a", "push", 0.05, 9.0, 40.0, knobs={"a": 1}),  # fairest, costly
                           _row("push-b", "push", 0.25, 2.0, 59.0, knobs={"a": 2}),  # cheapest
                           _row("push-c", "push", 0.28, 5.0, 50.0, knobs={"a": 3})]  # dominated
    view = across_methods(studies)
    fid_front = {(row[0], row[1]) for row in view["rows"] if "FD–FID" in row[5]}
    assert fid_front == {("push", "world defaults, a 1"), ("lens", "world defaults, k 80"),
                         ("lens", "world defaults, k 40"), ("push", "world defaults, a 2")}
    assert ("push", "world defaults, a 3") not in {(row[0], row[1]) for row in view["rows"]}
    assert view["rows"][0][0] == "push"  # sorted by FD
    assert across_methods(_studies()) is None  # one method: nothing to compare


def test_the_method_section_gives_the_hypervolume_of_all_its_settings_and_each_studys() -> None:
    from benchmark.study_fronts import hypervolume

    studies = _studies()
    studies[0]["hypervolume"] = [{"method": "lens", "sampler": {}, "settings": 3, "hypervolume": 0.5,
                                  "hypervolume_low": 0.4, "hypervolume_high": 0.6}]
    (view,) = method_views(studies)
    expected = hypervolume([(0.2 / 0.3, 2.5 / 3.0), (0.08 / 0.3, 2.6 / 3.0), (0.09 / 0.3, 3.5 / 3.0), (0.25 / 0.3, 3.0)],
                           (1.0, 1.5))
    assert view["hypervolume"] == expected > 0
    assert view["study_hypervolumes"] == ["lens-k 0.500 [0.40, 0.60] (3 settings)"]
