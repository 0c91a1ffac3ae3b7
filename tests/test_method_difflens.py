"""DiffLens mechanism tests on a tiny random SD pipeline (the real-profile path), plus world checks.

The tiny pipeline's attribute is a fixed colour rule on the final image (MeanColourClassifier), so
the probes, attribution and edits run exactly as they do on the world, only on an untrained model.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from doubles import MeanColourClassifier, world_colour_rows, world_open_prompts  # noqa: E402

from benchmark.errors import ConfigError
from benchmark.hooks import record_mid_block, split_branches
from benchmark.sampling import fresh_scheduler, sample
from benchmark.tiny import tiny_sd_components
from methods import METHODS, difflens
from methods.base import MethodData
from methods.difflens import (
    DiffLens,
    DiffLensParams,
    FeatureEdit,
    StepProbes,
    TopKSAE,
    attribute_features,
    ddim_step,
    from_positions,
    fvu,
    mixture_classes,
    sample_two_pass,
    to_positions,
    train_sae,
)

PROMPTS = ["a photo of a doctor", "a photo of a nurse"]
TINY = dict(samples_per_prompt=128, k=16, sae_steps=1000, sae_lr=3e-3, sae_batch=512, probe_epochs=10, edit_stop_fraction=1.0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_sd_components()


@pytest.fixture(scope="module")
def data():
    return MethodData(prompts=PROMPTS, classifier=MeanColourClassifier())


@pytest.fixture(scope="module")
def prepared(tiny, data, tmp_path_factory):
    method = DiffLens(DiffLensParams(**TINY))
    method.prepare(tiny, data, tmp_path_factory.mktemp("difflens"))
    return method


def heldout_h(components, n=32, seed_offset=10_000):
    """Conditional-branch mid-block outputs of fresh samples (seeds never used in preparation)."""
    seeds = list(range(seed_offset, seed_offset + n))
    with record_mid_block(components.unet) as rec:
        sample(components, [PROMPTS[i % 2] for i in range(n)], seeds)
    return torch.stack([split_branches(h, True)[1] for h in rec], dim=1)  # (N, T, C, H, W)


# -- SAE ---------------------------------------------------------------------------------------
def test_sae_reaches_low_fvu_on_heldout_activations(prepared, tiny):
    h = heldout_h(tiny)
    x = to_positions(h.flatten(0, 1)).reshape(-1, h.shape[2])
    with torch.no_grad():
        value = float(fvu(prepared.sae(x), x))
    assert value < 0.1, f"held-out FVU {value:.3f}"
    assert prepared.manifest["sae"]["heldout_fvu"] < 0.1


def test_topk_code_has_exactly_k_nonzeros_per_position(prepared, tiny):
    h = heldout_h(tiny, n=8)
    z = prepared.sae.encode(to_positions(h.flatten(0, 1)))
    counts = (z != 0).sum(-1)
    assert z.shape[-1] == 4 * h.shape[2]
    assert torch.all(counts == prepared.sae.k), counts.unique()


def test_sae_decoder_unit_norm_and_training_lowers_fvu():
    gen = torch.Generator().manual_seed(0)
    # data on a union of 4-dim subspaces: a sparse code fits it, a fresh SAE does not
    basis = torch.randn(8, 4, 16, generator=gen)
    which = torch.randint(0, 8, (4096,), generator=gen)
    x = torch.einsum("nk,nkd->nd", torch.randn(4096, 4, generator=gen), basis[which])
    params = DiffLensParams(expansion=4, k=8, sae_steps=300, sae_lr=3e-3, sae_batch=256)
    sae, history = train_sae(x, params, gen)
    fresh = TopKSAE(16, 64, 8)
    with torch.no_grad():
        fresh.b_dec.copy_(x.mean(0))
        assert float(fvu(sae(x), x)) < 0.5 * float(fvu(fresh(x), x))
    assert history[-1] < history[0]
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_parallel_gradient_removal_keeps_decoder_on_the_sphere():
    sae = TopKSAE(8, 16, 4)
    sae.W_dec.grad = torch.randn(16, 8)
    sae.remove_parallel_gradient()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(16), atol=1e-6)


def test_decoder_starts_as_encoder_transpose():
    sae = TopKSAE(8, 16, 4)
    enc = sae.encoder.weight / sae.encoder.weight.norm(dim=1, keepdim=True)
    assert torch.allclose(sae.W_dec, enc)


# -- probes and attribution -----------------------------------------------------------------------
def test_probes_beat_chance_on_their_validation_split(prepared):
    acc = prepared.manifest["probes"]["val_accuracy_per_step"]
    counts = np.array(prepared.manifest["data"]["label_counts"])
    assert max(acc) > counts.max() / counts.sum(), (acc, counts)


def test_integrated_gradients_completeness():
    """With many path points, the attributions of a sample sum to f(z) - f(0) (IG's completeness)."""
    torch.manual_seed(1)
    sae = TopKSAE(6, 24, 5).requires_grad_(False)
    probes = StepProbes(1, 6 * 4, 3)
    with torch.no_grad():
        probes.weight.normal_()
        probes.bias.normal_()
    h = torch.randn(1, 1, 6, 2, 2)
    scores = attribute_features(sae, probes, h, [0], 3, points=2000, temperature=1.0)
    z = sae.encode(to_positions(h[:, 0]))
    target = int(probes(h[:, 0].flatten(1), 0).argmax())

    def f(code):
        flat = sae.decode(code).transpose(-1, -2).reshape(1, -1)
        return float(torch.softmax(probes(flat, 0), -1)[0, target])

    assert scores[[c for c in range(3) if c != target]].abs().sum() == 0
    assert float(scores[target].sum()) == pytest.approx(f(z) - f(torch.zeros_like(z)), abs=2e-3)


# -- intervention ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, ratio", [("multiply", 1.0), ("add", 0.0), ("multiply_probability", 1.0),
                                         ("add_probability", 0.0)])
@pytest.mark.parametrize("suppress_others", [None, 1.0])
def test_identity_edit_leaves_samples_unchanged_bit_for_bit(prepared, tiny, mode, ratio, suppress_others):
    seeds = list(range(200, 206))
    prompts = [PROMPTS[i % 2] for i in range(len(seeds))]
    prepared.params = DiffLensParams(**{**TINY, "mode": mode, "ratio": ratio, "suppress_others": suppress_others})
    try:
        edited = prepared.generate(prompts, seeds)
    finally:
        prepared.params = DiffLensParams(**TINY)
    np.testing.assert_array_equal(edited, sample(tiny, prompts, seeds))


def test_competing_features_are_the_other_classes_minus_the_own():
    edit = FeatureEdit([torch.tensor([0, 1, 2]), torch.tensor([2, 3, 4]), torch.tensor([5])], [1.0] * 3, True, 0.0)
    assert edit.competing([0]).tolist() == [3, 4, 5]
    assert edit.competing([1]).tolist() == [0, 1, 5]
    assert edit.competing([0, 1]).tolist() == [5]
    assert edit.competing([0, 1, 2]).tolist() == []


def test_suppressing_rivals_removes_them_from_the_code_and_nothing_else(prepared, tiny):
    """With ``others = 0`` and no push of its own, an image's h changes by exactly ``-Dec(z[rivals])``:
    the rival class's top features leave the code, all other latents stay."""
    h = heldout_h(tiny, n=4)[:, 2]
    own, rival = prepared.rankings[0, :10].long(), prepared.rankings[1, :10].long()
    edit = FeatureEdit([own, rival], [torch.zeros(10), torch.zeros(10)], True, 0.0)
    out = edit.apply(prepared.sae, h, [[0], [0], [], [1]])
    z = prepared.sae.encode(to_positions(h))
    for n, pushed_to, removed in ((0, 0, rival), (3, 1, own)):
        removed = removed[~torch.isin(removed, own if pushed_to == 0 else rival)]
        dz = torch.zeros_like(z[n])
        dz[:, removed] = -z[n][:, removed]
        expected = h[n] + from_positions(prepared.sae.decode_delta(dz)[None], h[n:n + 1].shape)[0]
        assert torch.allclose(out[n], expected, atol=1e-5)
        assert z[n][:, removed].abs().sum() > 0  # the rivals were active: the check is not vacuous
    assert torch.equal(out[2], h[2])  # an image pushed to no class keeps its h


def test_suppressing_rivals_lets_more_images_reach_their_class(prepared, tiny):
    """The probe's probability of each image's drawn class at the last edited step is higher, on
    average, when the other class's features are removed than under the paper's edit alone (a
    weak push, 20 features at 0.1 of their mean value, so that the paper's edit does not saturate it:
    about 0.81 against 1.0 here)."""
    seeds, prompts = list(range(600, 624)), [PROMPTS[i % 2] for i in range(24)]
    classes = [[c] for c in mixture_classes(seeds, 2)]
    reached = {}
    for others in (None, 0.0):
        prepared.params = DiffLensParams(**{**TINY, "suppress_others": others, "edit_below_probability": None,
                                            "ratio": 0.1, "features_per_class": 20})
        edit, seen = prepared.feature_edit(), {}

        def fn(h, step, edit=edit, seen=seen):
            out = edit.apply(prepared.sae, h, classes)
            seen[step] = prepared.probe_probabilities(out, step)
            return out

        sample_two_pass(tiny, prompts, seeds, fn, {1, 2, 3})
        last = seen[max(seen)]
        reached[others] = float(torch.stack([last[n, c[0]] for n, c in enumerate(classes)]).mean())
    prepared.params = DiffLensParams(**TINY)
    assert reached[0.0] > reached[None] + 0.1, reached


def test_nonidentity_edit_changes_samples(prepared, tiny):
    seeds = list(range(200, 204))
    prompts = [PROMPTS[0]] * 4
    assert not np.array_equal(prepared.generate(prompts, seeds), sample(tiny, prompts, seeds))


def test_written_out_ddim_step_matches_scheduler(tiny):
    scheduler = fresh_scheduler(tiny, tiny.sampler)
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in scheduler.timesteps:
        expected = scheduler.step(eps, t, x).prev_sample
        assert torch.equal(ddim_step(scheduler, t, x, eps, eps), expected)
    # Asyrp: x0 from the edited estimate, direction from the unedited one
    t = scheduler.timesteps[1]
    a_t = scheduler.alphas_cumprod[t]
    a_prev = scheduler.alphas_cumprod[t - 1000 // len(scheduler.timesteps)]
    eps_edit = eps + 1.0
    x0 = (x - (1 - a_t).sqrt() * eps_edit) / a_t.sqrt()
    assert torch.allclose(ddim_step(scheduler, t, x, eps_edit, eps), a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, atol=1e-5)


@pytest.mark.parametrize("cls", [0, 1])
def test_boosting_top_features_raises_probe_probability(prepared, tiny, cls):
    """Add the class's top features (3x their mean active value); the probe's probability of that
    class on the edited h must rise at every edited step, on fresh seeds."""
    seeds = list(range(300, 316))
    prompts = [PROMPTS[i % 2] for i in range(len(seeds))]
    idx = prepared.rankings[cls, :10].long()
    edit = FeatureEdit([idx], [3.0 * prepared.mean_active[idx]], additive=True)
    identity = FeatureEdit([idx], [torch.zeros(len(idx))], additive=True)
    probs = {}
    for label, e in (("edited", edit), ("plain", identity)):
        seen = {}

        def fn(h, step, e=e, seen=seen):
            out = e.apply(prepared.sae, h, [[0]] * len(h))
            seen[step] = prepared.probe_probabilities(out, step)[:, cls]
            return out

        sample_two_pass(tiny, prompts, seeds, fn, {1, 2, 3})
        probs[label] = torch.stack([seen[s] for s in sorted(seen)])  # (steps, N)
    gain = (probs["edited"] - probs["plain"]).mean(dim=1)
    assert torch.all(gain > 0.05), gain


def test_gate_keeps_only_the_classes_the_probe_does_not_yet_give(prepared, tiny):
    h = heldout_h(tiny, n=8)[:, 2]  # (N, C, H, W) at step 2
    probs = prepared.probe_probabilities(h, 2)
    classes = [[0], [1], [0, 1], []] * 2
    for below in (0.3, 0.5, 0.9):
        kept = prepared.still_to_push(h, 2, classes, below)
        assert kept == [[c for c in chosen if probs[n, c] < below] for n, chosen in enumerate(classes)]
    assert prepared.still_to_push(h, 2, classes, 0.0) == [[]] * len(classes)


def test_a_gate_that_never_opens_leaves_samples_unchanged_bit_for_bit(prepared, tiny):
    seeds = list(range(200, 206))
    prompts = [PROMPTS[i % 2] for i in range(len(seeds))]
    prepared.params = DiffLensParams(**{**TINY, "edit_below_probability": 0.0})
    try:
        gated = prepared.generate(prompts, seeds)
    finally:
        prepared.params = DiffLensParams(**TINY)
    np.testing.assert_array_equal(gated, sample(tiny, prompts, seeds))
    assert not np.array_equal(prepared.generate(prompts, seeds), gated)


def test_gate_edits_fewer_images_than_the_paper_form(prepared, tiny, monkeypatch):
    """The gate (world default 0.5) applies the edit to a strict subset of the (image, step) pairs the
    paper's ungated form edits, and images it never edits stay the baseline's."""
    seeds, prompts = list(range(500, 516)), [PROMPTS[0]] * 16
    counts, current = {}, {}
    real = FeatureEdit.apply

    def spy(self, sae, h, classes):
        counts[current["form"]] = counts.get(current["form"], 0) + sum(len(c) for c in classes)
        return real(self, sae, h, classes)

    monkeypatch.setattr(FeatureEdit, "apply", spy)
    for form, below in (("paper", None), ("gated", 0.5)):
        current["form"] = form
        prepared.params = DiffLensParams(**{**TINY, "edit_below_probability": below})
        prepared.generate(prompts, seeds)
    prepared.params = DiffLensParams(**TINY)
    assert 0 < counts["gated"] < counts["paper"], counts


def test_probability_mixture_draws_per_seed():
    seeds = list(range(4000))
    classes = mixture_classes(seeds, 3)
    assert classes == mixture_classes(seeds, 3)
    assert classes[:50] == mixture_classes(seeds[:50], 3)
    shares = np.bincount(classes, minlength=3) / len(seeds)
    assert np.all(np.abs(shares - 1 / 3) < 0.03), shares


def test_image_does_not_depend_on_batch(prepared):
    seeds = [11, 12, 13]
    prompts = [PROMPTS[0]] * 3
    np.testing.assert_array_equal(prepared.generate(prompts, seeds)[1:2], prepared.generate(prompts[1:2], seeds[1:2]))


# -- preparation: cache, manifest, errors --------------------------------------------------------
def test_prepare_is_cached_and_manifest_written(prepared, tiny, data, monkeypatch):
    files = sorted(p.name for p in prepared.workdir.iterdir())
    assert any(f.endswith(".safetensors") for f in files) and any(f.endswith(".json") for f in files)
    manifest = json.loads(next(prepared.workdir.glob("*.json")).read_text())
    assert manifest["sha256"] == next(iter(prepared.artefacts.values()))
    assert {"config", "seconds", "data", "sae", "probes"} <= set(manifest)

    again = DiffLens(DiffLensParams(**TINY, mode="multiply", ratio=2.0))  # intervention settings reuse artefacts
    monkeypatch.setattr(DiffLens, "_train", lambda *a: pytest.fail("retrained although cached"))
    again.prepare(tiny, data, prepared.workdir)
    assert again.artefacts == prepared.artefacts
    assert torch.equal(again.rankings, prepared.rankings)


def test_retraining_gives_the_same_artefact_hash(prepared, tiny, data, tmp_path):
    """Training timings live in the JSON manifest only: equal training must give an equal file (and
    so the same method fingerprint and image-cache keys)."""
    again = DiffLens(DiffLensParams(**TINY))
    again.prepare(tiny, data, tmp_path)
    assert again.artefacts == prepared.artefacts
    assert again.fingerprint() == prepared.fingerprint()
    assert again.manifest["seconds"]["sae"] > 0  # phase timings still recorded, beside the artefact


def test_registered_and_bad_input_is_a_one_line_error(tiny, data, tmp_path):
    assert METHODS.get("difflens") is DiffLens
    with pytest.raises(ConfigError, match="classifier"):
        DiffLens().prepare(tiny, MethodData(prompts=PROMPTS), tmp_path)
    with pytest.raises(ConfigError, match="attribute 'age'"):
        DiffLens(DiffLensParams(attribute="age")).prepare(tiny, data, tmp_path)
    with pytest.raises(ConfigError, match="prompts"):
        DiffLens().prepare(tiny, MethodData(classifier=MeanColourClassifier()), tmp_path)
    with pytest.raises(ConfigError, match="mode"):
        DiffLens.from_config({"mode": "scale"})
    from diffusers import EulerDiscreteScheduler

    euler = tiny.replace(scheduler=EulerDiscreteScheduler.from_config(tiny.scheduler.config))
    with pytest.raises(ConfigError, match="DDIMScheduler"):
        DiffLens().prepare(euler, data, tmp_path)


def test_class_ratio_count_must_match_classes(prepared):
    prepared.params.class_ratios = (1.0, 2.0, 3.0)
    try:
        with pytest.raises(ConfigError, match="2 values"):
            prepared.feature_edit()
    finally:
        prepared.params.class_ratios = None


def test_paper_params_are_the_official_sd_age_config():
    p = DiffLensParams.paper()
    assert (p.mode, p.class_features, p.class_ratios, p.ig_temperature) == ("add_probability", (10, 0, 30), (30.0, 0.0, 50.0), 1000.0)


def test_features_command_prints_scores_and_saves_grid(tmp_path, capsys):
    from benchmark.diagnostics.difflens import cli

    grid = tmp_path / "grid.png"
    rc = cli(["features", "--profile", "tiny", "--workdir", str(tmp_path / "w"), "--top", "2", "--seeds", "3",
              "--grid", str(grid), "--samples-per-prompt", "16", "--edit-stop-fraction", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert len(re.findall(r"score [+-]\d", out)) == 4 and "warm" in out and "cool" in out
    from PIL import Image

    picture = np.asarray(Image.open(grid))
    assert picture.shape[0] > picture.shape[1] > 0  # 5 rows (unedited + 4 features) x 3 seeds
    # the unedited row and a boosted row differ
    h = (picture.shape[0] - 1) // 5
    assert not np.array_equal(picture[1:h], picture[1 + h:2 * h])


def test_a_step_range_that_edits_nothing_is_an_error(prepared, tiny):
    prepared.params = DiffLensParams(**{**TINY, "edit_skip_last": 100})  # more than the sampler has
    try:
        with pytest.raises(ConfigError, match="edit no step"):
            prepared.generate(["a photo"], [0])
    finally:
        prepared.params = DiffLensParams(**TINY)


def test_edit_stop_fraction_picks_the_first_steps(prepared, tiny, monkeypatch):
    seen = []
    real = difflens.sample_two_pass

    def spy(components, prompts, seeds, edit, edit_steps, config=None):
        seen.append(sorted(edit_steps))
        return real(components, prompts, seeds, edit, edit_steps, config)

    monkeypatch.setattr(difflens, "sample_two_pass", spy)
    n = tiny.sampler.num_inference_steps
    for fraction in (1.0, 0.5):
        prepared.params = DiffLensParams(**{**TINY, "edit_stop_fraction": fraction})
        prepared.generate(["a photo"], [0])
    prepared.params = DiffLensParams(**TINY)
    assert seen == [list(range(1, n)), list(range(1, math.ceil(n / 2)))]


@pytest.mark.slow
def test_world_difflens_reaches_target(tmp_path):
    """World defaults, prepared as the runner prepares them (every prompt that leaves colour open):
    colour soft FD at least 70 % below the baseline's and FID vs reference at most 1.5x."""
    pytest.importorskip("benchmark.world")
    import dataclasses

    from benchmark.world import load_world
    from classifiers.world import WorldClassifier

    world = load_world()
    data = dataclasses.replace(world.method_data, classifier=WorldClassifier(), attribute="color",
                               prompts=world_open_prompts(world))
    method = DiffLens()
    method.prepare(world.components, data, tmp_path)
    rows = world_colour_rows(world, {"baseline": lambda p, s: sample(world.components, p, s), "difflens": method.generate})
    assert rows["difflens"][0] <= 0.3 * rows["baseline"][0], rows
    assert rows["difflens"][1] <= 1.5 * rows["baseline"][1], rows


def test_a_recording_that_cannot_fit_in_memory_is_refused_after_its_first_batch(tiny, data, tmp_path, monkeypatch):
    """At SD 1.5's 512 px and 50 steps one image's h is 50 × 1280 × 8 × 8 floats (16.4 MB), held about 3
    times over (benchmark.memory has the check's own test)."""
    import methods.difflens as difflens

    batches = []
    original = difflens.sample
    monkeypatch.setattr(difflens, "sample", lambda *a, **k: batches.append(1) or original(*a, **k))
    monkeypatch.setattr(difflens, "available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match="difflens: recording h for 128 vanilla images"):
        DiffLens(DiffLensParams(samples_per_prompt=64)).prepare(tiny, data, tmp_path)
    assert batches == [1]  # stopped after the first of two batches


def test_a_feature_edit_moves_to_the_device_of_h():
    """DiffLens's SAE and probes are loaded on the CPU; on a GPU run its edit must follow h there."""
    edit = FeatureEdit([torch.tensor([0, 2]), torch.tensor([1])], [torch.tensor(2.0), torch.tensor([0.5])], True, 0.5)
    moved = edit.to(torch.device("meta"))
    assert {t.device.type for t in moved.features + moved.amounts} == {"meta"}
    assert moved.additive and moved.others == 0.5
    assert edit.features[0].device.type == "cpu"  # the original is left as it was
    # rivals are read back from the indices once per edit and class set, not at every edited step
    assert edit.competing([0]) is edit.competing([0]) and edit.competing([0]).tolist() == [1]
