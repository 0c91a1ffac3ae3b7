"""Studies: a grid over methods' knobs and the sampler, run through the ordinary runner."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from benchmark.errors import ConfigError
from benchmark.study import hypervolume, load_study, parse_study, points, run_study, settings
from methods import METHODS
from methods.base import Method, MethodData
from studies import STUDIES


@dataclasses.dataclass
class TintParams:
    strength: float = 0.0  # sampling-only: how far images are pushed towards red


class Tint(Method):
    """A test method: the base model's images, pushed towards red; records where it was prepared."""

    name = "tint"
    Params = TintParams
    trains = False
    prepared: list = []

    def prepare(self, base, data: MethodData, workdir: Path) -> None:
        self.components, self.workdir = base, workdir
        Tint.prepared.append((self.name, base.sampler.guidance_scale, base.sampler.num_inference_steps))

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        from benchmark.sampling import sample

        images = sample(self.components, prompts, seeds).astype(np.int16)
        images[..., 0] += int(200 * self.params.strength)
        images[..., 2] -= int(200 * self.params.strength)
        return images.clip(0, 255).astype(np.uint8)


class StepTint(Tint):
    """Tint with per-step artefacts (like SelfDebias's modes and DiffLens's probes)."""

    name = "steptint"
    per_step = True


@pytest.fixture
def tint(monkeypatch):
    for cls in (Tint, StepTint):
        monkeypatch.setitem(METHODS._paths, cls.name, f"tests.test_study:{cls.__name__}")
        monkeypatch.setitem(METHODS._loaded, cls.name, cls)
    Tint.prepared = []
    return Tint


def _spec(tones_file: Path, tmp_path: Path, **extra) -> dict:
    return {"run": {"profile": "tiny", "prompt_sets": [str(tones_file)], "classifiers": ["palette"], "batch_size": 4,
                    "metrics": {"bootstrap": 50}, "cache_dir": str(tmp_path / "cache")},
            "methods": [{"name": "tint", "grid": {"strength": [0.0, 0.5]}}], **extra}


def test_settings_expand_presets_and_the_grid() -> None:
    spec = parse_study({"methods": [{"name": "ddm", "settings": ["defaults", "paper"],
                                     "grid": {"alpha": [0.0, 0.05], "seed": [0, 1]}}]}, "s", "s.yaml")
    found = settings(spec)
    assert len(found) == 8 and len({s.label for s in found}) == 8
    paper = [s for s in found if s.preset == "paper"]
    assert paper[0].label == "ddm-paper-alpha0-seed0" and paper[0].params["max_steps"] == 4000
    assert [s.params for s in found if s.preset == "defaults"][3] == {"alpha": 0.05, "seed": 1}


@pytest.mark.parametrize(("study", "problem"), [
    ({"methods": [{"name": "ddn"}]}, "methods.0.name: unknown method 'ddn'"),
    ({"methods": [{"name": "ddm", "grid": {"alfa": [0.1]}}]}, "methods.0.grid.alfa: ddm has no parameter 'alfa'"),
    ({"methods": [{"name": "ddm", "grid": {"alpha": []}}]}, "methods.0.grid.alpha: give at least one value"),
    ({"methods": [{"name": "ddm", "grid": {"alpha": [-1]}}]}, "methods[1].params.alpha"),
    ({"methods": [{"name": "ddm"}], "sampler": {"eta": [0.0]}}, "sampler.eta"),
    ({"methods": [{"name": "ddm"}], "colour": 1}, "colour: unknown field"),
    ({"methods": [{"name": "ddm"}], "run": {"images_per_prompt": 0}}, "images_per_prompt"),
    ({"methods": []}, "methods"),
    ({"methods": [{"name": "ddm", "grid": {"seed": list(range(600))}}]}, "more than 500 runs"),
])
def test_a_bad_study_is_one_line_naming_the_file_and_field(study, problem) -> None:
    with pytest.raises(ConfigError) as err:
        points(parse_study(study, "bad", "bad.yaml"), source="bad.yaml")
    assert problem in str(err.value) and str(err.value).startswith("bad.yaml") and "\n" not in str(err.value)


def test_unknown_study_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown study 'nope'; known: .*ddm-alpha"):
        load_study("nope")


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_shipped_studies_are_valid(name) -> None:
    planned = points(load_study(name), source=name)
    assert planned and all(p.config.baseline == "baseline" for p in planned)


def test_a_sampler_grid_prepares_at_the_tuned_point_and_samples_at_each(tint, tones_file, tmp_path) -> None:
    spec = parse_study(_spec(tones_file, tmp_path, sampler={"guidance_scale": [1.5, 4.0]}), "g", "g")
    planned = points(spec)
    assert [p.config.sampler.guidance_scale for p in planned] == [1.5, 4.0]
    assert all(p.config.prepared_with is not None and p.config.prepared_with.guidance_scale is None for p in planned)


def test_a_step_grid_prepares_only_per_step_methods_at_each_step_count(tint, tones_file, tmp_path) -> None:
    """A method whose artefacts do not depend on the step count is prepared once, at the tuned count;
    one with per-step artefacts is prepared at every count of the grid (it cannot sample any other)."""
    data = _spec(tones_file, tmp_path, sampler={"num_inference_steps": [2, 3]})
    data["methods"] = [{"name": "tint", "grid": {"strength": [0.5]}}, {"name": "steptint", "grid": {"strength": [0.5]}}]
    data["run"]["max_prompts"], data["run"]["images_per_prompt"] = 1, 4
    run_study(parse_study(data, "steps", "steps"), output_dir=tmp_path / "out", progress=False)
    from benchmark.profiles import load_profile

    tuned = load_profile(points(parse_study(data, "steps", "steps"))[0].config).components.sampler.num_inference_steps
    assert tuned not in (2, 3)
    assert {s for name, _, s in Tint.prepared if name == "tint"} == {tuned}
    assert {s for name, _, s in Tint.prepared if name == "steptint"} == {2, 3}


def test_hypervolume_is_monotone_in_a_dominating_point() -> None:
    one = hypervolume([(0.6, 1.2)], (1.0, 1.5))
    assert 0 < one < hypervolume([(0.6, 1.2), (0.3, 1.0)], (1.0, 1.5)) <= 1
    assert hypervolume([(0.6, 1.6)], (1.0, 1.5)) == 0.0  # beyond the FID limit dominates nothing


def test_a_study_runs_every_setting_at_every_sampler_point(tint, tones_file, tmp_path, capsys) -> None:
    """Rows per (setting, point) with paired deltas against the baseline: strength 0 reproduces the
    baseline exactly (Δ FD 0), a red push moves the tone FD; the sampling-only knob never re-prepares
    at the other guidance (the method is prepared at the profile's own scale), and fronts are marked."""
    spec = parse_study(_spec(tones_file, tmp_path, sampler={"guidance_scale": [1.5, 4.0]}), "tint", "tint")
    folder = run_study(spec, output_dir=tmp_path / "out", progress=False)
    saved = json.loads((folder / "study.json").read_text())
    rows = {(r["label"], r["sampler"]["guidance_scale"]): r for r in saved["rows"]}
    assert set(rows) == {(label, g) for label in ("baseline", "tint-strength0", "tint-strength0.5") for g in (1.5, 4.0)}
    for g in (1.5, 4.0):
        assert rows[("tint-strength0", g)]["fd"] == rows[("baseline", g)]["fd"]
        assert rows[("tint-strength0", g)]["delta_fd"] == 0.0
        assert rows[("tint-strength0.5", g)]["fd"] != rows[("baseline", g)]["fd"]
        assert rows[("baseline", g)]["delta_fd"] is None
        assert rows[("tint-strength0.5", g)]["front_fid"] is None  # the tiny profile has no FID features: no front
    from benchmark.profiles import load_profile

    tuned = load_profile(points(spec)[0].config).components.sampler.guidance_scale
    assert {g for _, g, _ in Tint.prepared} == {tuned}
    assert {w["label"] for w in saved["robustness"]} == {"baseline", "tint-strength0", "tint-strength0.5"}
    assert all(w["points"] == 2 and w["worst_fd"] >= w["best_fd"] for w in saved["robustness"])
    assert "robustness (FD over the sampler grid)" in (folder / "study.txt").read_text()


def test_seed_spread_summarises_settings_that_differ_only_in_seed() -> None:
    from benchmark.study import seed_spread

    def row(seed, fd, alpha=0.05):
        return {"method": "ddm", "preset": "defaults", "knobs": {"alpha": alpha, "seed": seed}, "sampler": {},
                "fd": fd, "delta_fd": fd - 0.3, "fid": 2.0}

    rows = [row(0, 0.2), row(1, 0.3), row(2, 0.4), row(0, 0.1, alpha=0.0),
            {"method": "baseline", "preset": "defaults", "knobs": {}, "sampler": {}, "fd": 0.3, "delta_fd": None, "fid": 2.0}]
    (spread,) = seed_spread(rows)  # alpha 0 has one seed only: no spread to report
    assert spread["knobs"] == {"alpha": 0.05} and spread["seeds"] == [0, 1, 2]
    assert spread["fd"]["mean"] == pytest.approx(0.3) and spread["fd"]["sd"] == pytest.approx(0.1)
    assert (spread["fd"]["min"], spread["fd"]["max"]) == (0.2, 0.4) and spread["fid"]["sd"] == 0.0


def test_the_seed_and_image_interval_widens_with_the_seed_spread() -> None:
    """Seeds that agree give about the image-only width; seeds that disagree widen the interval to
    their spread (what a reader needs before trusting one training run's number)."""
    from benchmark.study import seed_and_image_interval

    rng = np.random.default_rng(0)
    target = np.array([0.5, 0.5])

    def setting(p_red: float) -> dict:
        return {f"p{i}": np.stack([np.full(200, p_red), np.full(200, 1 - p_red)], 1) + rng.normal(0, 0.05, (200, 2))
                for i in range(4)}

    agree = seed_and_image_interval({f"s{i}": setting(0.7) for i in range(3)}, target, n_boot=400)
    differ = seed_and_image_interval({"s0": setting(0.55), "s1": setting(0.7), "s2": setting(0.85)}, target, n_boot=400)
    assert agree["high"] - agree["low"] < 0.02
    assert differ["high"] - differ["low"] > 5 * (agree["high"] - agree["low"])
    assert differ["low"] < differ["mean"] < differ["high"] and differ["seeds"] == 3
    assert differ["mean"] == pytest.approx(np.mean([0.05, 0.2, 0.35]) * np.sqrt(2), abs=0.01)


def test_the_seed_and_image_interval_contains_its_estimate_near_zero() -> None:
    """A near-fair setting: the resampled norms sit above the estimate; the bias-corrected interval
    still contains it and does not go below 0."""
    from benchmark.study import seed_and_image_interval

    rng = np.random.default_rng(1)
    fair = {f"s{i}": {f"p{j}": rng.dirichlet([2, 2], 64) for j in range(10)} for i in range(3)}
    out = seed_and_image_interval(fair, np.array([0.5, 0.5]), n_boot=500)
    assert 0.0 <= out["low"] <= out["mean"] <= out["high"]


def test_the_seed_and_image_interval_reaches_a_fair_truth_and_counts_paired_images_once() -> None:
    """Three training seeds of a fair method on the same image seeds (12 prompts × 64 near-one-hot
    images): every seed's FD sits near 0.07 (a norm's bias), yet the truth 0 stays in the interval; seed
    copies of one run's images add no information, so they give that run's interval, not a narrower one."""
    from benchmark.study import seed_and_image_interval

    rng = np.random.default_rng(4)
    red = (rng.random((12, 64)) < 0.5).astype(float) * 0.98 + 0.01
    one = {f"p{i}": np.stack([red[i], 1 - red[i]], 1) for i in range(12)}
    fair = {f"s{s}": {k: v.copy() for k, v in one.items()} for s in range(3)}
    fair["s1"]["p0"] = fair["s1"]["p0"][::-1]  # one seed pairs its images with the others differently
    out = seed_and_image_interval(fair, np.array([0.5, 0.5]), n_boot=400)
    assert out["low"] == 0.0 < out["mean"] < out["high"] and out["mean"] > 0.03
    single = seed_and_image_interval({"s0": one}, np.array([0.5, 0.5]), n_boot=400)
    copies = seed_and_image_interval({f"s{s}": one for s in range(10)}, np.array([0.5, 0.5]), n_boot=400)
    assert copies["high"] == pytest.approx(single["high"]) and copies["low"] == pytest.approx(single["low"])


def test_three_seeds_widen_the_interval_by_students_t() -> None:
    """Far from fair, with seeds that disagree far more than images do, the half-width above the
    estimate is Student's t with 2 degrees of freedom (4.30) times the seeds' standard error, not 1.96."""
    from benchmark.study import seed_and_image_interval

    def setting(p_red: float) -> dict:
        return {f"p{i}": np.tile([p_red, 1 - p_red], (500, 1)) for i in range(4)}  # no image noise at all

    fds = np.sqrt(2) * np.array([0.25, 0.3, 0.4])
    out = seed_and_image_interval({f"s{i}": setting(0.5 + d / np.sqrt(2)) for i, d in enumerate(fds)},
                                  np.array([0.5, 0.5]), n_boot=200)
    assert out["mean"] == pytest.approx(fds.mean())
    assert out["high"] - out["mean"] == pytest.approx(4.3027 * fds.std(ddof=1) / np.sqrt(3), rel=1e-3)
    assert out["mean"] - out["low"] == pytest.approx(out["high"] - out["mean"], rel=1e-3)
