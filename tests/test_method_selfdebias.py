"""SelfDebias mechanism tests on a tiny random SD pipeline (the real-profile path), plus the world check."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles import PixelEmbedder, world_colour_rows, world_open_prompts  # noqa: E402

from benchmark.errors import ConfigError
from benchmark.hashing import hash_file
from benchmark.images import ImageSet
from benchmark.sampling import StepInfo, sample
from benchmark.tiny import tiny_sd_components
from methods.base import MethodData
from methods.selfdebias import (
    SelfDebias,
    SelfDebiasParams,
    batch_kl,
    cluster_means,
    mode_probs,
    order_modes,
    principal_directions,
    spectral_labels,
)

PROMPTS = ["a photo of a doctor", "a photo of a nurse"]
TINY = SelfDebiasParams(num_samples=24, hidden_dim=64, step_embed_dim=16, epochs=6, train_batch=64,
                        lam=1.0, step_size=4.0, tau=0.1, guidance_batch=8, k_max=4)


class Tripwire:
    """Fails the test on any attribute access: stands in for labels and classifiers."""

    def __getattr__(self, name: str):
        raise AssertionError(f"SelfDebias read {name!r} of a label source")


class TripwireLabels(dict):
    def __getitem__(self, key):
        raise AssertionError("SelfDebias read attribute labels")

    get = items = keys = values = __iter__ = __len__ = __contains__ = __getitem__  # type: ignore[assignment]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return tiny_sd_components()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("selfdebias")


@pytest.fixture(scope="module")
def method(base, workdir) -> SelfDebias:
    m = SelfDebias(TINY)
    m.prepare(base, MethodData(prompts=PROMPTS, embedder=PixelEmbedder()), workdir)
    return m


def with_params(base, workdir, **changes) -> SelfDebias:
    """Another configuration on the same artefacts (guidance fields are not part of the cache key)."""
    m = SelfDebias(dataclasses.replace(TINY, **changes))
    m.prepare(base, MethodData(prompts=PROMPTS, embedder=PixelEmbedder()), workdir)
    return m


def mid_block_batch(base, prompt: str, seeds: list[int], step: int) -> tuple[torch.Tensor, StepInfo]:
    """The vanilla CFG mid-block batch ``[uncond; cond]`` at sampling step ``step``."""
    seen = {}

    def keep(h, info):
        if info.index == step:
            seen["h"], seen["info"] = h.clone(), info

    sample(base, [prompt] * len(seeds), seeds, mid_block_fn=keep)
    return seen["h"], seen["info"]


# -- the guidance step --------------------------------------------------------------------------
def test_guidance_step_lowers_the_batch_kl(method, base, workdir):
    """The raw gradient (paper) cuts the KL by a quarter at every step; the world's projected one,
    which may only move h within 4 principal directions, still lowers it at every step."""
    prompts = [PROMPTS[0]] * 8
    groups = method.groups(prompts)
    raw = with_params(base, workdir, guide_subspace=None)
    for step in range(base.sampler.num_inference_steps):
        h, info = mid_block_batch(base, PROMPTS[0], list(range(100, 108)), step)
        assert method.active(info), "the tiny sampler's steps are all below the threshold"
        for m, most in ((raw, 0.75), (method, 1.0)):
            before = float(m.objective(h, info, prompts, groups))
            after = float(m.objective(m.guide(h, info, prompts, groups), info, prompts, groups))
            assert before > 0
            assert after < most * before, f"step {step}, subspace {m.params.guide_subspace}: KL {before:.4g} -> {after:.4g}"


def test_projected_guidance_moves_h_only_within_the_principal_directions(method, base):
    assert method.params.guide_subspace == 4
    prompts = [PROMPTS[0]] * 8
    h, info = mid_block_batch(base, PROMPTS[0], list(range(100, 108)), 2)
    change = method.guide(h, info, prompts, method.groups(prompts)) - h
    assert change.abs().max() > 0
    for branch, part in zip(("uncond", "cond"), change.chunk(2), strict=True):
        basis = method.subspace[branch][info.index]  # (4, D)
        flat = part.flatten(1)
        inside = (flat @ basis.T) @ basis
        assert torch.allclose(flat, inside, atol=1e-4 * flat.abs().max().item()), branch


def test_principal_directions_are_orthonormal_and_capture_the_most_variance():
    gen = torch.Generator().manual_seed(0)
    # 200 samples, 3 steps, h of 4 x 2 x 2 = 16 dims; most variance along 2 fixed directions
    strong = torch.linalg.qr(torch.randn(16, 2, generator=gen))[0].T  # (2, 16)
    x = torch.randn(200, 3, 2, generator=gen) @ (5 * strong) + 0.1 * torch.randn(200, 3, 16, generator=gen)
    basis = principal_directions(x.view(200, 3, 4, 2, 2), 2)
    assert basis.shape == (3, 2, 16)
    for b in basis:
        assert torch.allclose(b @ b.T, torch.eye(2), atol=1e-5)
        # the found plane equals the planted one: projecting the planted directions keeps them whole
        assert torch.allclose((strong @ b.T) @ b, strong, atol=0.02)


def test_guidance_moves_the_batch_mean_toward_a_non_uniform_target(base, workdir):
    m = with_params(base, workdir, num_modes=2, target=(0.2, 0.8))
    prompts = [PROMPTS[1]] * 8
    h, info = mid_block_batch(base, PROMPTS[1], list(range(8)), 2)
    guided = m.guide(h, info, prompts, m.groups(prompts))
    _, cond = guided.chunk(2)
    z = m.projector(cond, torch.full((8,), info.index))
    p_bar = mode_probs(z, m.modes[PROMPTS[1]]["cond"][info.index], m.params.tau).mean(0)
    _, cond0 = h.chunk(2)
    p_bar0 = mode_probs(m.projector(cond0, torch.full((8,), info.index)),
                        m.modes[PROMPTS[1]]["cond"][info.index], m.params.tau).mean(0)
    target = torch.tensor([0.2, 0.8])
    assert (p_bar - target).abs().sum() < (p_bar0 - target).abs().sum()


def test_relative_step_limit_bounds_each_images_change(base, workdir):
    prompts = [PROMPTS[0]] * 8
    h, info = mid_block_batch(base, PROMPTS[0], list(range(100, 108)), 3)
    changes = {}
    for limit in (None, 0.01):
        m = with_params(base, workdir, step_size=1e4, inner_steps=1, max_relative_step=limit)
        guided = m.guide(h, info, prompts, m.groups(prompts))
        changes[limit] = ((guided - h).flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1))
    assert changes[None].max() > 0.05  # unlimited, this step size moves some image's h by > 5 %
    assert changes[0.01].max() <= 0.01 * 1.0001 and changes[0.01].max() > 0.009  # limited, and used


def test_guidance_leaves_steps_above_the_threshold_alone(method, base):
    h, info = mid_block_batch(base, PROMPTS[0], list(range(4)), 0)
    late = dataclasses.replace(info, timestep=900)
    assert method.guide(h, late, [PROMPTS[0]] * 4, method.groups([PROMPTS[0]] * 4)) is None


def test_batch_kl_is_zero_only_at_the_target():
    target = torch.tensor([0.5, 0.5])
    assert float(batch_kl(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), target)) == pytest.approx(0.0, abs=1e-7)
    assert float(batch_kl(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), target)) == pytest.approx(np.log(2), rel=1e-5)


# -- lambda = 0 -----------------------------------------------------------------------------------
def test_lambda_zero_reproduces_the_baseline_bit_for_bit(base, workdir):
    prompts = [PROMPTS[0]] * 6 + [PROMPTS[1]] * 5
    seeds = list(range(200, 211))
    baseline = sample(base, prompts, seeds)
    assert np.array_equal(with_params(base, workdir, lam=0.0, guidance_batch=4).generate(prompts, seeds), baseline)
    # the same path with lam > 0 does change the images, so the equality above is not vacuous
    assert not np.array_equal(with_params(base, workdir, guidance_batch=4).generate(prompts, seeds), baseline)


# -- mode discovery -------------------------------------------------------------------------------
def test_mode_order_is_stable_across_steps_on_a_seeded_case():
    rng = np.random.default_rng(0)
    steps, k, dim = 6, 3, 8
    sizes_true = [40, 30, 20]
    true_centres = rng.normal(size=(k, dim)) * 4
    drift = rng.normal(size=(steps, k, dim)) * 0.3
    truth = np.repeat(np.arange(k), sizes_true)
    centroids, sizes, members = [], [], []
    for s in range(steps):
        z = true_centres[truth] + drift[s][truth] + rng.normal(size=(len(truth), dim)) * 0.2
        labels = spectral_labels(z, k, n_neighbors=5, seed=s)
        c, n = cluster_means(z, labels, k)
        centroids.append(c)
        sizes.append(n)
        members.append(labels)
    # precondition: the raw label numbering changes between steps, so ordering has work to do
    raw_maps = {tuple(int(np.bincount(m[truth == t]).argmax()) for t in range(k)) for m in members}
    assert len(raw_maps) > 1
    ordered, ordered_sizes = order_modes(centroids, sizes)
    for s in range(steps):
        # mode j at every step is true group j: largest first at the last step, then matched
        nearest = np.argmin(((ordered[s][:, None] - (true_centres + drift[s])[None]) ** 2).sum(-1), axis=1)
        assert nearest.tolist() == list(range(k)), f"step {s}"
        assert ordered_sizes[s].tolist() == sizes_true


def test_prepared_modes_are_matched_between_neighbouring_steps(method):
    for prompt, branches in method.modes.items():
        for branch, centroids in branches.items():
            c = torch.nn.functional.normalize(centroids, dim=-1)
            k = c.shape[1]
            for s in range(len(c) - 1):
                sim = (c[s] @ c[s + 1].T).numpy()
                best = max(sum(sim[i, p[i]] for i in range(k)) for p in itertools.permutations(range(k)))
                assert np.trace(sim) >= best - 1e-6, f"{prompt} {branch} step {s}"


# -- preparation ------------------------------------------------------------------------------------
def test_training_lowers_the_projection_loss_and_is_reproducible(method, base, tmp_path):
    losses = method.report["losses"]
    assert losses[-1] < losses[0] - 1.0
    again = SelfDebias(TINY)
    again.prepare(base, MethodData(prompts=PROMPTS, embedder=PixelEmbedder()), tmp_path)
    assert again.artefacts == method.artefacts
    for name in again.artefacts:
        assert hash_file(tmp_path / f"{name}.safetensors") == again.artefacts[name]
        assert (tmp_path / f"{name}.json").exists()


def test_prepare_loads_cached_artefacts_without_training(method, base, workdir, monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("retrained although artefacts were cached")

    monkeypatch.setattr(SelfDebias, "fit", fail)
    m = with_params(base, workdir, lam=5.0)
    assert m.artefacts == method.artefacts
    for prompt in PROMPTS:
        assert torch.equal(m.modes[prompt]["cond"], method.modes[prompt]["cond"])


def test_no_labels_are_read(base, tmp_path):
    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    target = ImageSet(images, ["a photo of a doctor"] * 4, labels=TripwireLabels())
    data = MethodData(target=target, nontarget=None, prompts=[PROMPTS[0]], classifier=Tripwire(), attribute=None,
                      embedder=PixelEmbedder())
    m = SelfDebias(dataclasses.replace(TINY, epochs=1))
    m.prepare(base, data, tmp_path)
    out = m.generate([PROMPTS[0]] * 4, [1, 2, 3, 4])
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.uint8


def test_prompts_without_modes_are_sampled_unguided(method, base):
    prompts = ["a photo of a red face"] * 4 + [PROMPTS[0]] * 4
    seeds = list(range(40, 48))
    out = method.generate(prompts, seeds)
    assert np.array_equal(out[:4], sample(base, prompts[:4], seeds[:4]))
    assert "a photo of a red face" in method.unguided
    # A call holding only such prompts (the runner's batches of a conditional prompt) is plain sampling.
    alone = method.generate(prompts[:4], seeds[:4])
    assert np.array_equal(alone, out[:4])


# -- batches and errors -----------------------------------------------------------------------------
def test_groups_are_runs_of_one_prompt_cut_every_guidance_batch(method, base, workdir):
    p, q = PROMPTS
    assert method.groups([p] * 16 + [q] * 3 + [p] * 2) == [(0, 8), (8, 16), (16, 19), (19, 21)]
    # a run that is not a multiple of guidance_batch is split evenly, with no small left-over group
    assert method.groups([p] * 17) == [(0, 5), (5, 11), (11, 17)]
    assert with_params(base, workdir, guidance_batch=None).groups([p] * 10 + [q] * 3) == [(0, 10), (10, 13)]


def test_a_group_does_not_depend_on_the_rest_of_the_call(method):
    seeds = list(range(300, 316))
    whole = method.generate([PROMPTS[0]] * 16, seeds)
    halves = np.concatenate([method.generate([PROMPTS[0]] * 8, seeds[:8]), method.generate([PROMPTS[0]] * 8, seeds[8:])])
    assert np.abs(whole.astype(int) - halves).max() <= 1


def test_bad_inputs_are_one_line_errors(method, base, tmp_path):
    with pytest.raises(ConfigError, match="embedder"):
        SelfDebias(TINY).prepare(base, MethodData(prompts=PROMPTS), tmp_path)
    with pytest.raises(ConfigError, match="target"):
        SelfDebias.from_config({"num_modes": 2, "target": [0.5, 0.3, 0.2]})
    assert SelfDebias.Params.paper().tau == 8.0


# -- the world ----------------------------------------------------------------------------------------
def _world():
    try:
        from benchmark.world import load_world

        return load_world()
    except Exception as exc:  # the shipped world weights are optional in a source checkout
        pytest.skip(f"world not available: {exc}")


@pytest.mark.slow
def test_world_soft_fd_halves_and_fid_stays_close(tmp_path):
    """World defaults, prepared as the runner prepares them (every prompt that leaves colour open), no
    labels: colour soft FD at least 50 % below the baseline's, FID vs reference at most 1.5x.

    Starts from a copy of the shipped artefacts (the runner's store), so it measures what a world run
    samples; a default changed without re-exporting retrains here (about 10 min on 2 cores)."""
    import shutil

    from benchmark.world import weights_dir

    world = _world()
    data = dataclasses.replace(world.method_data, target=None, classifier=None, prompts=world_open_prompts(world))
    m = SelfDebias()
    for folder in sorted((weights_dir("default") / "methods" / "selfdebias").iterdir()):
        shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    m.prepare(world.components, data, tmp_path)
    rows = world_colour_rows(world, {"baseline": lambda p, s: sample(world.components, p, s), "selfdebias": m.generate})
    assert rows["selfdebias"][0] <= 0.5 * rows["baseline"][0], rows
    assert rows["selfdebias"][1] <= 1.5 * rows["baseline"][1], rows


def test_an_artefact_without_its_guidance_subspace_is_a_one_line_error(method, workdir):
    from safetensors.torch import load_file

    name = next(n for n in method.artefacts if n.startswith("selfdebias-"))
    full = load_file(workdir / f"{name}.safetensors")
    assert any(k.startswith("subspace.") for k in full)
    stripped = {k: v for k, v in full.items() if not k.startswith("subspace.")}
    with pytest.raises(ConfigError, match="no guidance subspace") as err:
        method.load_artefacts(stripped, PROMPTS)
    assert "\n" not in str(err.value)
    method.load_artefacts(full, PROMPTS)  # the module's method stays usable for later tests


def test_purity_diagnostic_runs_from_the_shipped_artefacts(tmp_path, capsys):
    """Per prompt a world run prepares on and per discovered mode: class shares in [0, 1] and counts that
    add up to the images drawn, sampled from the shipped artefacts (nothing trained: the folder keeps
    exactly the shipped files)."""
    import json

    from benchmark.diagnostics.selfdebias import cli
    from benchmark.world import weights_dir

    world = _world()
    assert cli(["purity", "--n", "6", "--workdir", str(tmp_path / "w")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result) == sorted(world_open_prompts(world))
    for per_attribute in result.values():
        for modes in per_attribute.values():
            assert sum(m[-1] for m in modes) == 6
            assert all(v is None or 0 <= v <= 1 for m in modes for v in m[:-1])
    shipped = {f.name for d in (weights_dir("default") / "methods" / "selfdebias").iterdir() for f in d.iterdir()}
    assert {f.name for f in (tmp_path / "w").iterdir()} == shipped


@pytest.mark.parametrize("argv", [["purity", "--n", "0"], ["modes", "missing.json"]])
def test_diagnostics_refuse_bad_input_in_one_line(argv, tmp_path, monkeypatch):
    from benchmark.diagnostics.selfdebias import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        cli(argv)
