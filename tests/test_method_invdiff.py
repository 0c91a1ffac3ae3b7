"""InvDiff mechanism tests, on tiny random SD components (and on the world where it is built)."""

from __future__ import annotations

import dataclasses
import sys
import types

import numpy as np
import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.hooks import record_mid_block
from benchmark.images import ImageSet
from benchmark.sampling import sample
from benchmark.tiny import tiny_sd_components
from methods import METHODS, MethodData
from methods.invdiff import (
    InvariantGuidedUNet,
    InvDiff,
    InvDiffParams,
    alignment,
    build_guide,
    combine,
    group_spread,
    hard_groups,
    infer_groups,
    invariance_loss,
    normalise_by_caption,
)

torch.set_num_threads(1)

# a budget that runs in seconds on the tiny model
FAST = dict(num_groups=2, group_epochs=60, loss_draws=2, train_steps=25, batch_size=16, learning_rate=5e-3,
            lr_warmup_steps=0, lr_schedule="constant")


def tiny_target(n: int = 48, size: int = 16, seed: int = 0) -> ImageSet:
    """Red or blue squares on noise, 3:1 red, with the colour as a label (the oracle attribute)."""
    rng = np.random.default_rng(seed)
    color = (rng.random(n) < 0.25).astype(np.int64)  # 1 = blue
    images = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    for i, c in enumerate(color):
        images[i, 4:12, 4:12, 0 if c == 0 else 2] = 230
    captions = ["a photo of a doctor" if i % 2 else "a photo of a nurse" for i in range(n)]
    return ImageSet(images, captions, name="tiny-target", labels={"color": color})


@pytest.fixture(scope="module")
def tiny():
    return tiny_sd_components(seed=0)


@pytest.fixture(scope="module")
def data():
    return MethodData(target=tiny_target(), attribute="color")


@pytest.fixture(scope="module")
def prepared(tiny, data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("invdiff")
    method = InvDiff(InvDiffParams(**FAST))
    method.prepare(tiny, data, workdir)
    return method, workdir


# -- group inference --------------------------------------------------------------------------------
def test_group_inference_raises_spread_and_keeps_w_stochastic():
    gen = torch.Generator().manual_seed(0)
    cluster = (torch.rand(400, generator=gen) < 0.3).long()
    losses = 1.0 + 0.8 * cluster + 0.1 * torch.randn(400, generator=gen)
    for nonzero_weight in (0.0, 3.0):
        result = infer_groups(losses, 4, epochs=150, lr=0.01, nonzero_weight=nonzero_weight, seed=1)
        w = result.weights
        assert result.spread_start == pytest.approx(group_spread(_start_w(400, 4, 1), losses))
        assert result.spread_end > 3 * result.spread_start
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(1), torch.ones(400), atol=1e-5, rtol=0)
    # the inferred groups recover the loss clusters (what makes them useful as environments)
    two = infer_groups(losses, 2, epochs=150, lr=0.01, seed=1)
    assert alignment(two.weights, {"cluster": cluster.numpy()})["cluster"] > 0.8


def _start_w(n: int, e: int, seed: int) -> torch.Tensor:
    w = torch.rand(n, e, generator=torch.Generator().manual_seed(seed))
    return w / w.sum(1, keepdim=True)


def test_invariance_penalty_is_zero_when_group_losses_are_equal():
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    equal = torch.tensor([1.0, 3.0, 2.0, 2.0])  # group means 2 and 2
    loss, groups = invariance_loss(equal, w, invariance_weight=10.0)
    assert float(loss) == pytest.approx(2.0, abs=1e-6)
    assert float(loss - groups.mean()) == pytest.approx(0.0, abs=1e-6)
    unequal = torch.tensor([1.0, 1.0, 3.0, 3.0])  # group means 1 and 3: unbiased variance 2
    loss, _ = invariance_loss(unequal, w, invariance_weight=10.0)
    assert float(loss) == pytest.approx(2.0 + 10.0 * 2.0, abs=1e-5)
    # a group absent from the batch is dropped, and one group alone gives its mean
    loss, groups = invariance_loss(unequal[:2], w[:2], invariance_weight=10.0)
    assert len(groups) == 1 and float(loss) == pytest.approx(1.0)


def test_hard_groups_are_one_hot_joint_classes():
    labels = {"color": np.array([0, 1, 0, 1]), "shade": np.array([0, 0, 2, 2])}
    w = hard_groups(labels, ["color", "shade"])
    assert w.shape == (4, 4) and torch.equal(w.sum(1), torch.ones(4))
    assert alignment(hard_groups(labels, ["color"]), labels)["color"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="oracle_attributes"):
        hard_groups(labels, ["age"])


# -- the combined prediction ------------------------------------------------------------------------
def _unet_inputs(tiny, batch: int = 3):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, tiny.latent_channels, 8, 8, generator=gen)
    text = torch.randn(batch, 16, 32, generator=gen)
    return x, torch.tensor([500] * batch), text


def test_zero_initialised_guide_gives_the_documented_formula(tiny):
    guide = build_guide(tiny.unet, 0.5, seed=0)
    assert sum(p.numel() for p in guide.parameters()) < sum(p.numel() for p in tiny.unet.parameters())
    x, t, text = _unet_inputs(tiny)
    with torch.no_grad():
        eps_base = tiny.unet(x, t, encoder_hidden_states=text).sample
        for r in (0.8, 0.4):
            out = InvariantGuidedUNet(tiny.unet, guide, r)(x, t, encoder_hidden_states=text).sample
            torch.testing.assert_close(out, (1 - r) * eps_base, rtol=0, atol=0)
        # the official code's other branches: r > 1 adds r*eps_G to the base, so it starts at eps_base
        torch.testing.assert_close(InvariantGuidedUNet(tiny.unet, guide, 1.5)(x, t, text).sample, eps_base, rtol=0, atol=0)
        # with a non-zero guide the wrapper is r*eps_G + (1-r)*eps_base
        torch.nn.init.normal_(guide.conv_out.weight, std=0.1)
        eps_guide = guide(x, t, encoder_hidden_states=text).sample
        out = InvariantGuidedUNet(tiny.unet, guide, 0.8)(x, t, encoder_hidden_states=text).sample
        torch.testing.assert_close(out, 0.8 * eps_guide + 0.2 * eps_base)
        assert not torch.allclose(out, 0.2 * eps_base)
    assert torch.equal(combine(torch.ones(2), torch.full((2,), 3.0), -2.0), torch.full((2,), 4.0))


def test_copy_initialised_guide_is_the_base_with_zero_output(tiny):
    guide = build_guide(tiny.unet, 1.0, seed=0, init="copy")
    base_state = tiny.unet.state_dict()
    for name, value in guide.state_dict().items():
        if name.startswith("conv_out"):
            assert not value.any()
        else:
            assert torch.equal(value, base_state[name]), name
    with pytest.raises(ConfigError, match="guide_width"):
        InvDiff.from_config({"guide_init": "copy", "guide_width": 0.5})


def test_caption_normalisation_compares_images_of_one_prompt():
    losses = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [15.0, 150.0]])
    caption = torch.tensor([0, 0, 1, 1])
    out = normalise_by_caption(losses, caption)
    expected = torch.tensor([[0.5, 0.5], [1.5, 1.5], [0.5, 0.5], [1.5, 1.5]])
    torch.testing.assert_close(out, expected)


# -- prepare / generate -----------------------------------------------------------------------------
def test_prepare_trains_the_guide_and_records_groups(prepared, data):
    method, workdir = prepared
    assert method.trained
    report = method.training
    assert report["objective_end"] < report["objective_start"]
    groups = method.groups
    assert groups["num_groups"] == 2 and groups["spread_end"] > groups["spread_start"]
    assert set(groups["nmi"]) == {"color", "color|caption"}
    assert all(0.0 <= v <= 1.0 for v in groups["nmi"].values())
    assert sorted(p.name.split("-")[0] for p in workdir.glob("*.safetensors")) == ["groups", "guide"]
    assert (workdir / "invdiff-manifest.json").exists()
    guide = method.components.unet.guide
    assert any(float(p.abs().sum()) > 0 for p in guide.conv_out.parameters())


def test_prepare_is_idempotent_and_cached_by_hash(prepared, tiny, data):
    method, workdir = prepared
    again = InvDiff(InvDiffParams(**FAST))
    again.prepare(tiny, data, workdir)
    assert not again.trained and again.artefacts == method.artefacts
    assert again.groups["nmi"] == method.groups["nmi"]
    prompts, seeds = ["a photo of a doctor"] * 2, [3, 4]
    assert np.array_equal(again.generate(prompts, seeds), method.generate(prompts, seeds))
    # another ratio retrains the guide but reuses the groups
    other = InvDiff(InvDiffParams(**{**FAST, "ratio": 0.5}))
    other.prepare(tiny, data, workdir)
    assert other.trained
    assert len(list(workdir.glob("groups-*.safetensors"))) == 1
    assert len(list(workdir.glob("guide-*.safetensors"))) == 2


def test_retraining_gives_the_same_artefact_hashes(prepared, tiny, data, tmp_path):
    """Training timings live in invdiff-manifest.json only: equal training must give equal files (and
    so the same method fingerprint and image-cache keys)."""
    method, _ = prepared
    again = InvDiff(InvDiffParams(**FAST))
    again.prepare(tiny, data, tmp_path)
    assert again.trained and again.artefacts == method.artefacts
    reloaded = InvDiff(InvDiffParams(**FAST))
    reloaded.prepare(tiny, data, tmp_path)
    assert not reloaded.trained and reloaded.training["seconds"] == again.training["seconds"] > 0


def test_ratio_zero_reproduces_the_baseline_exactly(tiny, data, tmp_path):
    method = InvDiff(InvDiffParams(**{**FAST, "ratio": 0.0}))
    method.prepare(tiny, data, tmp_path)
    prompts, seeds = ["a photo of a doctor", "a photo of a nurse"], [11, 12]
    assert np.array_equal(method.generate(prompts, seeds), sample(tiny, prompts, seeds))


def test_generate_differs_from_baseline_and_keeps_mid_block_hooks(prepared, tiny):
    method, _ = prepared
    prompts, seeds = ["a photo of a doctor"] * 2, [5, 6]
    images = method.generate(prompts, seeds)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    assert not np.array_equal(images, sample(tiny, prompts, seeds))
    with record_mid_block(method.components.unet) as recorded:
        method.generate(prompts, seeds)
    assert len(recorded) == tiny.sampler.num_inference_steps


def test_hard_groups_prepare_aligns_perfectly(tiny, data, tmp_path):
    method = InvDiff(InvDiffParams(**{**FAST, "grouping": "hard", "train_steps": 2}))
    method.prepare(tiny, data, tmp_path)
    assert method.groups["grouping"] == "hard" and method.groups["nmi"]["color"] == pytest.approx(1.0)


def test_bad_parameters_and_data_are_one_line_errors(tiny, tmp_path):
    with pytest.raises(ConfigError, match="num_groups"):
        METHODS.get("invdiff").from_config({"num_groups": 3})
    with pytest.raises(ConfigError, match="unknown parameter"):
        InvDiff.from_config({"ratioo": 0.5})
    with pytest.raises(ConfigError, match="target"):
        InvDiff().prepare(tiny, MethodData(), tmp_path)
    unlabelled = MethodData(target=tiny_target().without_labels())
    with pytest.raises(ConfigError, match="labels"):
        InvDiff(InvDiffParams(grouping="hard")).prepare(tiny, unlabelled, tmp_path)


def test_paper_configuration_names_the_official_values():
    p = InvDiffParams.paper()
    assert (p.group_epochs, p.group_lr, p.ratio, p.invariance_weight, p.train_steps, p.learning_rate) == (
        500, 0.01, 0.8, 1.0, 10_000, 1e-4)
    assert (p.loss_draws, p.loss_timesteps, p.loss_normalisation, p.caption_dropout) == (1, "random", "none", 0.0)
    assert dataclasses.replace(p, num_groups=16).num_groups == 16


def test_cli_groups_prints_nmi_per_group_count(tiny, monkeypatch, capsys):
    from benchmark.diagnostics.invdiff import cli

    world = types.SimpleNamespace(components=tiny, method_data=MethodData(target=tiny_target()))
    fake = types.ModuleType("benchmark.world")
    fake.load_world = lambda: world
    monkeypatch.setitem(sys.modules, "benchmark.world", fake)
    assert cli(["groups", "--groups", "2", "4", "--draws", "1", "--epochs", "20"]) == 0
    out = capsys.readouterr().out
    assert "NMI color" in out and len(out.strip().splitlines()) == 3
    assert cli(["groups", "--groups", "3"]) == 2
    assert "not one of" in capsys.readouterr().out


# -- the world ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    try:
        from benchmark.world import load_world

        return load_world()
    except Exception as exc:  # no world module or weights yet: the tiny tests above cover the mechanism
        pytest.skip(f"world not available: {exc}")


def test_world_zero_guide_formula_and_mid_block(world):
    base = world.components
    guide = build_guide(base.unet, InvDiffParams().guide_width, seed=0)
    x = torch.randn(2, base.latent_channels, base.sampler.height, base.sampler.width,
                    generator=torch.Generator().manual_seed(0))
    from benchmark.sampling import encode_text

    text = encode_text(base, ["a photo of a three", ""])
    t = torch.tensor([400, 400])
    with torch.no_grad():
        out = InvariantGuidedUNet(base.unet, guide, 0.8)(x, t, encoder_hidden_states=text).sample
        torch.testing.assert_close(out, 0.2 * base.unet(x, t, encoder_hidden_states=text).sample, rtol=0, atol=0)
    assert InvariantGuidedUNet(base.unet, guide, 0.8).mid_block is base.unet.mid_block


@pytest.mark.slow
def test_world_target_soft_fd_and_fid(world, tmp_path):
    """The issue's target: soft FD at least 20 % below the baseline's, FID vs reference at most 1.5x."""
    from benchmark.seeding import image_seeds
    from classifiers.world import WorldClassifier

    method = InvDiff()
    method.prepare(world.components, world.method_data, tmp_path)
    classifier = WorldClassifier()
    attribute = world.method_data.attribute or "color"
    fd_base, fd_method, base_images, method_images = [], [], [], []
    for prompt in world.method_data.prompts:
        seeds = image_seeds(0, prompt, 200)
        b = sample(world.components, [prompt] * 200, seeds)
        m = method.generate([prompt] * 200, seeds)
        for images, out in ((b, fd_base), (m, fd_method)):
            p = classifier.predict(images)[attribute].mean(0)
            out.append(float(np.linalg.norm(p - 1.0 / len(p))))
        base_images.append(b)
        method_images.append(m)
    assert np.mean(fd_method) <= 0.8 * np.mean(fd_base)
    from cleanfid.fid import frechet_distance

    def fid(images):
        a, b = world.features(np.concatenate(images)), world.features(world.reference.images)
        return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))

    assert fid(method_images) <= 1.5 * fid(base_images)
