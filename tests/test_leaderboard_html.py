"""The static page: self-contained, escaped, with figures, thumbnails and provenance; and in a real browser."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from leaderboard_runs import PROMPTS, make_run

from leaderboard.html import SCRIPT, build_leaderboard, plot_label, render_report
from leaderboard.submission import add_entry

REPO = Path(__file__).resolve().parents[1]
HOSTILE_METHOD = '<script>alert("method")</script>'
QUOTE_METHOD = "x\" onmouseover=\"alert(2)' $\\frac{"
HOSTILE_PROMPT = "<img src=x onerror=alert('prompt')>"
HOSTILE_CONFIG = "</pre><script>alert('config')</script>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    prompts = [dict(p) for p in PROMPTS]
    prompts[0] = {**prompts[0], "text": HOSTILE_PROMPT}
    a = make_run(root, "run-a", methods={"baseline": 0.35, HOSTILE_METHOD: 0.05}, n=16, n_boot=20, prompts=prompts,
                 extra_config={"note": HOSTILE_CONFIG})
    b = make_run(root, "run-b", methods={"ddm": 0.12, QUOTE_METHOD: 0.2}, n=16, n_boot=20, seed=5)
    # The submission check refuses such names (test_hostile_names_are_refused_at_submission); the page must
    # still escape them, so these entries are placed directly, as a local or older entry would be.
    for run in (a, b):
        entry = root / "entries" / run.name
        shutil.copytree(run, entry)
        (entry / "entry.json").write_text(json.dumps({"run_id": run.name, "bundle_sha256": "0" * 64,
                                                      "verified_metrics": 1}))
    build_leaderboard(root / "entries", root / "out")
    return root / "out"


def test_hostile_names_are_refused_at_submission(tmp_path: Path) -> None:
    from leaderboard.submission import SubmissionRejected

    for i, name in enumerate([HOSTILE_METHOD, "bаseline", "baseline\u202e", "FD!"]):
        run = make_run(tmp_path, f"run-{i}", methods={"baseline": 0.35, name: 0.05}, n=8, n_boot=10)
        with pytest.raises(SubmissionRejected, match=r"\[name\]"):
            add_entry(_bundle(run, tmp_path / f"{i}.zip"), tmp_path / "entries")


def _bundle(run: Path, out: Path) -> Path:
    from hostile_bundles import good_files, write_zip

    return write_zip(out, good_files(run))


def test_page_is_self_contained_and_escaped(site: Path) -> None:
    html = (site / "index.html").read_text()
    parser = _Tags()
    parser.feed(html)
    # Exactly the one script we wrote, and the CSP names its hash, so nothing else could run.
    assert parser.scripts == [SCRIPT]
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html and "default-src 'none'" in html
    for tag, attrs in parser.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
        assert tag not in ("link", "iframe", "object", "embed")
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    # The hostile strings are present as text, escaped.
    assert "&lt;script&gt;alert(&#34;method&#34;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(&#39;prompt&#39;)&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#39;config&#39;)&lt;/script&gt;" in html
    # Attribute values decode back to the exact strings: quotes did not end an attribute early.
    values = {v for _, attrs in parser.tags for v in attrs.values()}
    assert HOSTILE_METHOD in values and QUOTE_METHOD in values


def test_page_has_every_method_table_figure_thumbnail_and_provenance(site: Path) -> None:
    html = (site / "index.html").read_text()
    for method in ("baseline", "ddm"):
        assert f'<td data-sort="{method}">{method}</td>' in html
    assert html.count('class="sortable"') > 20
    figures = re.findall(r"<figure><img alt=\"([^\"]*)\"", html)
    charts = re.findall(r"<figure class=\"chart\"><table class=\"(shares|heat)\" aria-label=\"([^\"]*)\"", html)
    assert any(kind == "shares" and "class distribution" in t for kind, t in charts)
    assert any("FD vs FID and CLIP-T" in f for f in figures)
    assert any(kind == "heat" and "per-prompt heat map" in t for kind, t in charts)
    # Thumbnails: one row per method with samples (the hostile names with "/" have none), same columns.
    grid = html[html.index('<table class="thumbs">'):]
    grid = grid[: grid.index("</table>")]
    assert grid.count("<tr><td>") == 3 and "(seed 1000)" in grid
    for key in ("bundle sha256", "metrics recomputed by the check", "metrics as reported (not recomputable)",
                "thumbnails recomputed from their pixels", "prompt set synth", "bootstrap"):
        assert f"<th scope=\"row\">{key}</th>" in html
    # the entry's own facts are filled in (a loop over prompt sets once blanked them)
    assert re.search(r'<th scope="row">bundle sha256</th>\s*<td>[0-9a-f]{64}</td>', html)
    assert re.search(r'<th scope="row">metrics recomputed by the check</th>\s*<td>[1-9][0-9]*</td>', html)
    assert "numpy" in html and "run-b" in html


def test_table_exports_are_written(site: Path) -> None:
    tables = site / "tables"
    for ext in ("csv", "json", "md", "tex"):
        assert (tables / f"synth-synthclf-color-fd.{ext}").is_file()
    doc = json.loads((tables / "synth-synthclf-color-fd.json").read_text())
    assert doc["higher_is_better"] is False and len(doc["rows"]) == 4
    md = (tables / "tables.md").read_text()
    assert "&lt;script&gt;" in md and "<script>" not in md


def test_render_report_writes_the_page_into_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("leaderboard.html.all_figures", lambda *a: ([], ["figures drawn elsewhere"]))
    run = make_run(tmp_path, "r", methods={"baseline": 0.3}, n=8, n_boot=10)
    out = render_report(run)
    assert out == run / "report.html"
    html = out.read_text()
    assert "debias-bench run r" in html and "data:image/png;base64," in html  # thumbnails
    assert "figures drawn elsewhere" in html and '<td data-sort="baseline">baseline</td>' in html


def test_plot_labels_cannot_trigger_mathtext() -> None:
    assert plot_label("$\\frac{") == r"\$\\frac{"
    assert len(plot_label("x" * 100)) == 32


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _run_chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    exe = _chromium()
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


@pytest.mark.browser
def test_page_in_headless_chromium(site: Path, tmp_path: Path) -> None:
    if _chromium() is None:
        pytest.skip("headless Chromium not found (install Debian's `chromium` package: apt-get install -y chromium)")
    page = site / "index.html"
    html = page.read_text()
    table_id = re.search(r'<table class="sortable" id="([^"]*color-fd)"', html).group(1)
    # Column 3 is the soft FD (method, rank, hard, soft*, n); sort it descending through the fragment.
    proc = _run_chromium(["--dump-dom", f"{page.as_uri()}#sort={table_id}:3:desc"], tmp_path)
    dom = proc.stdout
    assert 'data-ready="1"' in dom, proc.stderr[-2000:]
    assert "data-js-error" not in re.search(r"<body[^>]*>", dom).group(0)
    console_errors = [line for line in proc.stderr.splitlines()
                      if "CONSOLE" in line and ("Uncaught" in line or "Refused" in line or "Error" in line)]
    assert console_errors == []
    start = dom.index(f'id="{table_id}"')
    assert 'data-sorted="3:desc"' in dom[start:start + 300]
    body = dom[dom.index("<tbody>", start):dom.index("</tbody>", start)]
    values = [float(re.findall(r'data-sort="([^"]*)"', row)[3]) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
    assert len(values) == 4 and values == sorted(values, reverse=True)
    shots = REPO / "test-artifacts"
    shots.mkdir(exist_ok=True)
    shot = shots / "leaderboard.png"
    shot.unlink(missing_ok=True)
    proc = _run_chromium(["--window-size=1280,6400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]


def test_cost_table_relates_each_method_to_its_runs_baseline(tmp_path: Path) -> None:
    from leaderboard.html import cost_view, render_page
    from leaderboard.rundir import Run

    cost = {"baseline": {"unet_evals_per_image": 40, "seconds_per_image": 0.08, "train_seconds": 0.0,
                         "generated": 10, "timed_images": 10},
            "difflens": {"unet_evals_per_image": 58, "seconds_per_image": 0.12, "train_seconds": 66.06,
                         "generated": 0, "timed_images": 10},
            "ddm": {"unet_evals_per_image": 40, "seconds_per_image": 0.09, "generated": 4, "timed_images": 10},
            "odd": {"unet_evals_per_image": "many", "seconds_per_image": float("nan"), "train_seconds": True},
            HOSTILE_METHOD: "not a mapping"}
    machine = {"cpu": "AMD EPYC", "cores": 2}
    run = Run(tmp_path, {"run_id": "r", "metrics": [], "cost": cost, "execution": {"machine": machine}})
    rows = {r["cells"][0]["text"]: [c["text"] for c in r["cells"][1:]] for r in cost_view([run])["rows"]}
    assert rows["difflens"][:5] == ["58", "1.45", "0.120", "1.50", "66"]
    assert rows["baseline"] == ["40", "1.00", "0.080", "1.00", "0", "AMD EPYC, 2 cores"]
    # seconds read back from the cache were timed elsewhere: the page says so instead of the machine
    assert rows["difflens"][5] == "an earlier run (timings read from the cache)"
    assert rows["ddm"][5].startswith("AMD EPYC, 2 cores (4 of 10 images")
    assert rows["odd"] == ["–"] * 6  # untrusted values that are not finite numbers are not shown
    assert HOSTILE_METHOD not in rows
    html, _ = render_page([run])
    assert '<h2 id="cost">Cost</h2>' in html and 'id="cost-table"' in html and ">66</td>" in html


def test_figures_are_drawn_once_per_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-writing the report of a run whose numbers did not change reuses its figures; a changed
    number redraws them."""
    import leaderboard.html as page

    run = make_run(tmp_path, "run-a", methods={"baseline": 0.3, "ddm": 0.05}, n=12, n_boot=20)
    drawn = []
    original = page.tradeoff_figures
    monkeypatch.setattr(page, "tradeoff_figures", lambda *a: drawn.append(1) or original(*a))
    first = render_report(run).read_text()
    render_report(run)
    assert len(drawn) == 1 and render_report(run).read_text() == first
    results = json.loads((run / "results.json").read_text())
    results["metrics"][0]["value"] += 0.01
    (run / "results.json").write_text(json.dumps(results))
    render_report(run)
    assert len(drawn) == 2


def test_class_colours_follow_class_names() -> None:
    from matplotlib.colors import CSS4_COLORS

    from leaderboard.charts import COLORBLIND, class_colors

    red, blue, light, dark, other, white = class_colors(["red", "blue", "light", "dark", "female", "white"])
    assert (red, blue) == ("#ff0000", "#0000ff") == (CSS4_COLORS["red"].lower(), CSS4_COLORS["blue"].lower())  # never swapped
    assert light != dark and (other, white) == tuple(COLORBLIND[:2])  # no white bar on the white page
    many = class_colors([f"c{i}" for i in range(len(COLORBLIND) + 2)])
    assert len(many) == len(COLORBLIND) + 2


def test_share_charts_show_each_methods_mean_shares_and_the_fair_shares(tmp_path: Path) -> None:
    from leaderboard.charts import share_charts
    from leaderboard.rundir import load_run

    run = load_run(make_run(tmp_path, "run-a", methods={"baseline": 0.3, "ddm": 0.05}, n=12, n_boot=10))
    pred = run.predictions()
    charts = {c.title: c for c in share_charts([run], {})}
    colour = next(c for t, c in charts.items() if "· color (synthclf)" in t)
    assert [r["label"] for r in colour.rows] == ["baseline", "ddm"] and colour.fair == [50.0]
    assert colour.prompts == list(dict.fromkeys(pred["prompt_id"]))
    for row in colour.rows:
        for pid, bar in zip(colour.prompts, row["bars"], strict=True):
            mine = pred[(pred["method"] == row["label"]) & (pred["prompt_id"] == pid)]
            want = [100 * mine[f"synthclf/color/{k['label']}"].mean() for k in colour.classes]
            got = {s["color"]: s["pct"] for s in bar["segments"]}
            assert [got.get(k["color"], 0.0) for k in colour.classes] == pytest.approx(want, abs=0.01)
            assert bar["text"].startswith(f"{row['label']} · {pid}: ")
    first = colour.prompts[0]
    run.predictions = lambda: pred[~((pred["method"] == "ddm") & (pred["prompt_id"] == first))]
    colour = next(c for c in share_charts([run], {}) if "· color (synthclf)" in c.title)
    assert colour.rows[1]["bars"][0] == {"text": f"ddm · {first}: no images", "segments": []}


def test_the_page_opens_with_the_headline_sorted_by_fd(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run-a", methods={"baseline": 0.35, "ddm": 0.1, "selfdebias": 0.02}, n=24, n_boot=20)
    html = render_report(run).read_text()
    assert html.index('id="headline"') < html.index('id="tables"')
    table = html[html.index('data-headline="synth/color"'):]
    table = table[: table.index("</table>")]
    methods = re.findall(r"<tr><td>([a-z]+)</td><td>([0-9.]+) ", table)
    assert [m for m, _ in methods] == ["selfdebias", "ddm", "baseline"]  # least biased first
    assert [float(v) for _, v in methods] == sorted(float(v) for _, v in methods)


def test_thumbnail_grid_shows_plain_prompts_first_one_image_each(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run-a", methods={"baseline": 0.3, "ddm": 0.05}, n=12, n_boot=10)
    html = render_report(run).read_text()
    grid = html[html.index('id="samples"'):]
    header = re.findall(r"<th>([a-z-]+) #(\d+)", grid[: grid.index("</thead>")])
    plain = [p["id"] for p in PROMPTS if not p["named"]]
    named = [p["id"] for p in PROMPTS if p["named"]]
    assert [pid for pid, _ in header[: len(PROMPTS)]] == plain + named  # every prompt once, plain first
    assert {idx for _, idx in header[: len(PROMPTS)]} == {"0"}


def test_every_heat_map_has_one_row_order_baseline_first_and_one_scale(tmp_path: Path) -> None:
    from leaderboard.charts import heat_maps
    from leaderboard.rundir import load_run
    from leaderboard.tables import build_tables

    run = make_run(tmp_path, "run-a", methods={"selfdebias": 0.05, "baseline": 0.3, "ddm": 0.2}, n=12, n_boot=20)
    tables = [t for t in build_tables([load_run(run)]) if t.metric == "fd" and not t.per_prompt.empty]
    maps = heat_maps(tables)
    assert len(maps) == len(tables) > 1
    orders = [[r["label"] for r in m.rows] for m in maps]
    assert all(o == orders[0] for o in orders) and orders[0][0].startswith("baseline")
    assert orders[0][1:] == sorted(orders[0][1:])
    for m, t in zip(maps, tables, strict=True):
        values = t.per_prompt.loc[orders[0]].to_numpy(dtype=float)
        assert [[c["text"] for c in r["cells"]] for r in m.rows] == [[f"{v:.2f}" for v in row] for row in values]
        # one scale: the largest value gets the scale's darkest colour, equal values equal colours
        top = np.unravel_index(np.nanargmax(values), values.shape)
        assert m.rows[top[0]]["cells"][top[1]]["bg"] == m.scale[-1]["bg"] and m.scale[0]["text"] == "0.00"


# --- the rendered page, read back from headless Chromium (issue 23: what a reader saw was wrong) ----------

# Named (conditional) prompts declared among the plain ones, one whose id sorts first: the grid must still show
# the plain prompts first. Six prompts with two images each fill the grid's 12 columns. Methods in config order
# baseline, difflens, ddm; by colour FD they rank difflens, ddm, baseline.
WORLD_LIKE_PROMPTS = [
    {"id": "blue-zero", "text": "a photo of a blue zero", "named": {"color": "blue"}},
    {"id": "eight", "text": "a photo of a eight", "named": {}},
    {"id": "zero", "text": "a photo of a zero", "named": {}},
    {"id": "red-one", "text": "a photo of a red one", "named": {"color": "red"}},
    {"id": "one", "text": "a photo of a one", "named": {}},
    {"id": "seven", "text": "a photo of a seven", "named": {}},
]
WORLD_LIKE_METHODS = {"baseline": 0.35, "difflens": 0.02, "ddm": 0.15}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A leaderboard (one world-like entry and the shipped studies) built as `leaderboard build` builds it,
    opened in headless Chromium; the DOM it serialises after its script ran."""
    if _chromium() is None:
        pytest.skip("headless Chromium not found (install Debian's `chromium` package: apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("rendered")
    run = make_run(root, "run-w", methods=WORLD_LIKE_METHODS, n=24, n_boot=20, prompts=WORLD_LIKE_PROMPTS)
    entry = root / "leaderboard" / "entries" / "run-w"
    shutil.copytree(run, entry)
    (entry / "entry.json").write_text(json.dumps({"run_id": "run-w", "bundle_sha256": "0" * 64, "verified_metrics": 1}))
    shutil.copytree(REPO / "leaderboard" / "studies", root / "leaderboard" / "studies")
    page = build_leaderboard(root / "leaderboard" / "entries", root / "site")
    proc = _run_chromium(["--window-size=1280,900", "--dump-dom", page.as_uri()], root)
    dom = proc.stdout
    assert 'data-ready="1"' in dom, proc.stderr[-2000:]
    assert "data-js-error" not in re.search(r"<body[^>]*>", dom).group(0)
    results = json.loads((entry / "results.json").read_text())
    return {"dom": dom, "results": results, "predictions": pd.read_parquet(entry / "predictions.parquet")}


def _text(cell: str) -> str:
    return re.sub(r"<[^>]+>", "", cell).strip()


def _tables(html: str, pattern: str) -> list[tuple[str, list[list[str]]]]:
    """(opening tag, rows of cell texts) of every <table> whose opening tag matches ``pattern``."""
    out = []
    for m in re.finditer(r"(<table[^>]*>)(.*?)</table>", html, re.S):
        if re.search(pattern, m.group(1)):
            rows = [[_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
                    for r in re.findall(r"<tr[^>]*>(.*?)</tr>", m.group(2), re.S)]
            out.append((m.group(1), rows))
    return out


@pytest.mark.browser
def test_rendered_page_opens_with_the_headline_sorted_by_fd(rendered: dict) -> None:
    dom, results = rendered["dom"], rendered["results"]
    # what a reader meets first: the headline section, and its tables before any other table
    assert re.findall(r'<h2 id="([^"]+)"', dom)[0] == "headline"
    # at 1280 px no visible table sticks out of the page (the sample grid did: 12 columns of long headers)
    assert re.search(r'<body[^>]*data-wide-tables="([^"]*)"', dom).group(1) == ""
    assert re.search(r"<table[^>]*>", dom).group(0).startswith('<table class="headline"')
    fd = {r["method"]: r["value"] for r in results["metrics"]
          if (r["metric"], r["variant"], r["attribute"], r["prompt_id"]) == ("fd", "soft", "color", None)}
    (tag, rows), = _tables(dom, r'data-headline="synth/color"')
    header, body = rows[0], rows[1:]
    assert header[:3] == ["method", "FD [95% CI]", "ΔFD [95% CI]"] and "FID×" in header and "UNet×" in header
    assert [r[0] for r in body] == sorted(fd, key=fd.get) == ["difflens", "ddm", "baseline"]
    shown = [float(r[1].split()[0]) for r in body]
    assert shown == [round(fd[r[0]], 3) for r in body] and shown == sorted(shown)
    assert body[-1][2] == "—"  # the baseline has no change against itself (this synthetic run records no ΔFD)
    assert len(_tables(dom, r'class="headline"')) == 2  # colour and shade


@pytest.mark.browser
def test_rendered_class_colours_follow_class_names(rendered: dict) -> None:
    """The colour attribute's bars: class "red" in red and "blue" in blue (it was the other way round, in
    the colour-blind palette's blue and orange), each class's area its mean share."""
    from matplotlib.colors import CSS4_COLORS

    dom, pred = rendered["dom"], rendered["predictions"]
    charts = dict(re.findall(r'<table class="shares" aria-label="([^"]*)">(.*?)</table>', dom, re.S))

    def widths(chart: str) -> dict[str, float]:  # each colour's summed bar width, in % of a bar
        out: dict[str, float] = {}
        for pct, colour in re.findall(r'<span style="width: ?([0-9.]+)%; ?background: ?([^;"]+);?"', chart):
            out[colour] = out.get(colour, 0.0) + float(pct)
        return out

    colour = widths(next(c for t, c in charts.items() if "· color (synthclf): class distribution" in t))
    assert set(colour) == {CSS4_COLORS["red"].lower(), CSS4_COLORS["blue"].lower()}  # not the palette's blue/orange
    # one bar per method and prompt, all the same size: areas in proportion to the mean shares
    means = pred.groupby(["method", "prompt_id"])[["synthclf/color/red", "synthclf/color/blue"]].mean().sum()
    expected = means["synthclf/color/red"] / means["synthclf/color/blue"]
    red, blue = colour[CSS4_COLORS["red"].lower()], colour[CSS4_COLORS["blue"].lower()]
    assert red / blue == pytest.approx(expected, rel=1e-3), (red, blue, expected)
    shade = widths(next(c for t, c in charts.items() if "· shade (synthclf): class distribution" in t))
    assert CSS4_COLORS["red"].lower() not in shade and shade["#303030"] > 100  # "dark" is dark grey


@pytest.mark.browser
def test_rendered_sample_grid_one_row_per_method_plain_prompts_first_same_seeds(rendered: dict) -> None:
    dom = rendered["dom"]
    grid = re.search(r'<table class="thumbs">(.*?)</table>', dom, re.S).group(1)
    header = [_text(c) for c in re.findall(r"<th>(.*?)</th>", grid.split("</thead>")[0], re.S)][1:]
    columns = [re.fullmatch(r"([a-z-]+) #(\d+) \(seed (\d+)\)", h).groups() for h in header]
    prompts = [pid for pid, _, _ in columns]
    # plain prompts first (in the prompt set's order), then the named ones; one image of each before a second
    order = ["eight", "zero", "one", "seven", "blue-zero", "red-one"]
    assert prompts == order + order and [i for _, i, _ in columns] == ["0"] * 6 + ["1"] * 6
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", grid.split("<tbody>")[1], re.S)
    assert [label for label, _ in rows] == ["baseline", "difflens", "ddm"]  # one row per method, baseline first
    for label, cells in rows:
        alts = re.findall(r'<img alt="([^"]*)"', cells)
        assert alts == [f"{label} · {pid} #{i} · seed {seed}" for pid, i, seed in columns]  # same seed per column


@pytest.mark.browser
def test_rendered_studies_sections(rendered: dict) -> None:
    """Every shipped study has its section, its per-point tables sorted by FD with the numbers of its
    study.json, and its FD-against-FID figure."""
    dom = rendered["dom"]
    assert "studies" in re.findall(r'<h2 id="([^"]+)"', dom) and '<a href="#studies">Studies</a>' in dom
    shipped = sorted((REPO / "leaderboard" / "studies").glob("*.json"))
    assert shipped
    sections = dom.split('<h3 id="study-')[1:]
    assert [s.split('"')[0] for s in sections] == [json.loads(p.read_text())["study"]["name"] for p in shipped]
    for path, section in zip(shipped, sections, strict=True):
        study = json.loads(path.read_text())
        section = section.split("<h2")[0]
        tables = _tables(section, r'class="sortable study"')
        points = {json.dumps(r.get("sampler", {}), sort_keys=True) for r in study["rows"]}
        assert len(tables) == len(points)
        shown = [row for _, rows in tables for row in rows[1:]]
        assert len(shown) == len(study["rows"])
        for _, rows in tables:
            fds = [float(r[1].split()[0]) for r in rows[1:]]
            assert fds == sorted(fds)
        baseline = next(r for r in study["rows"] if r["label"] == "baseline")
        assert any(r[0].rstrip(" *") == "baseline" and r[1].startswith(f"{baseline['fd']:.3f} [") for r in shown)
        assert re.search(r'<img alt="[^"]*FD against FID" src="data:image/png;base64,', section)


def test_tradeoff_points_get_distinct_colour_blind_safe_colours_and_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five methods: five different colours of Paul Tol's bright scheme (DDM and SelfDebias were two
    near-identical oranges), each point also named where it is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from leaderboard.html import TRADEOFF_COLORS, tradeoff_figures
    from leaderboard.rundir import load_run
    from leaderboard.tables import combined_metrics

    methods = {"baseline": 0.35, "ddm": 0.1, "invdiff": 0.15, "selfdebias": 0.05, "difflens": 0.02}
    run = make_run(tmp_path, "run-a", methods=methods, n=8, n_boot=10)
    drawn, named = [], []
    real_errorbar, real_annotate = Axes.errorbar, Axes.annotate
    monkeypatch.setattr(Axes, "errorbar", lambda self, *a, **kw: drawn.append((kw["label"], kw["color"]))
                        or real_errorbar(self, *a, **kw))
    monkeypatch.setattr(Axes, "annotate", lambda self, text, *a, **kw: named.append(text) or real_annotate(self, text, *a, **kw))
    figures, _ = tradeoff_figures(combined_metrics([load_run(run)]))
    assert figures
    panel = drawn[: len(methods)]  # the first panel: FD against FID
    assert sorted(label for label, _ in panel) == sorted(methods) and sorted(named[: len(methods)]) == sorted(methods)
    colours = [colour for _, colour in panel]
    assert len(set(colours)) == len(methods) and set(colours) <= set(TRADEOFF_COLORS)
