"""DDM mechanism tests on tiny random SD components (the real-profile path), plus world checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from doubles import world_colour_rows  # noqa: E402

from benchmark.errors import ConfigError, DataError
from benchmark.images import ImageSet
from benchmark.sampling import sample
from benchmark.tiny import tiny_sd_components
from methods import METHODS, ddm
from methods.base import MethodData
from methods.ddm import DDM, DDMParams, DDMTrainer, TrainingData, add_lora, training_scheduler

CAPTION = "a photo of a doctor"


def _solid(n: int, rgb: tuple[int, int, int], rng: np.random.Generator, size: int = 16) -> np.ndarray:
    base = np.broadcast_to(np.array(rgb, np.int16), (n, size, size, 3))
    return np.clip(base + rng.integers(-20, 21, (n, size, size, 3)), 0, 255).astype(np.uint8)


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def base():
    return tiny_sd_components(seed=0)


@pytest.fixture(scope="module")
def data() -> MethodData:
    """Target: reddish squares captioned like the prompt; non-target: noise textures."""
    rng = np.random.default_rng(0)
    target = ImageSet(_solid(24, (200, 40, 40), rng), [CAPTION] * 24, "target")
    nontarget = ImageSet(rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), ["a photo"] * 8, "nontarget")
    return MethodData(target=target, nontarget=nontarget, prompts=[CAPTION])


def small(**kw) -> DDMParams:
    return DDMParams(**{"batch_size": 4, "max_steps": 3, "entropy_images": 8, **kw})


def lora_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if "lora_" in n}


# -- mechanism ------------------------------------------------------------------------------------


def test_indicator_ce_gradient_reaches_lora_weights(base, data):
    trainer = DDMTrainer(base, data, small(alpha=1.0))
    _, ce = trainer.losses(trainer.data.next_batch(8))
    ce.backward()
    # LoRA B starts at zero, so the first gradient lands on B (dL/dA = 0 while B = 0).
    unet_b = [p.grad for n, p in trainer.unet.named_parameters() if "lora_B" in n]
    text_b = [p.grad for n, p in trainer.text_encoder.named_parameters() if "lora_B" in n]
    assert unet_b and text_b
    assert sum(float(g.abs().sum()) for g in unet_b if g is not None) > 0
    assert sum(float(g.abs().sum()) for g in text_b if g is not None) > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.indicator.parameters())
    # Base weights stay frozen: only LoRA and indicator train.
    assert all(not p.requires_grad for n, p in trainer.unet.named_parameters() if "lora_" not in n)


def _plain_lora(base, data: MethodData, params: DDMParams, steps: int) -> dict[str, torch.Tensor]:
    """A plain LoRA fine-tuning loop (MSE only, no indicator) on DDM's data stream."""
    unet, text_encoder = add_lora(base, params)
    stream = TrainingData(base, [(data.target, 1), (data.nontarget, 0)], params.seed, params.balance_sets)
    sched = training_scheduler(base)
    trainable = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.learning_rate, betas=params.adam_betas,
                            weight_decay=params.weight_decay, eps=params.adam_eps)
    for _ in range(steps):
        batch = stream.next_batch(params.batch_size)
        z0 = base.vae.encode(batch.images).latent_dist.sample(generator=stream.generator) * base.vae.config.scaling_factor
        zt = sched.add_noise(z0, batch.noise, batch.timesteps)
        ids = base.tokenizer(batch.captions, padding="max_length", max_length=base.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        eps = unet(zt, batch.timesteps, encoder_hidden_states=text_encoder(ids)[0]).sample
        F.mse_loss(eps, batch.noise).backward()
        torch.nn.utils.clip_grad_value_(trainable, params.clip_value)
        opt.step()
        opt.zero_grad()
    return {**lora_tensors(unet), **{f"te.{k}": v for k, v in lora_tensors(text_encoder).items()}}


def test_alpha_zero_is_plain_lora_finetuning(base, data):
    params = small(alpha=0.0, learning_rate=1e-2)
    plain = _plain_lora(base, data, params, steps=3)

    def ddm_weights(p: DDMParams) -> dict[str, torch.Tensor]:
        trainer = DDMTrainer(base, data, p)
        trainer.train(3)
        return {**lora_tensors(trainer.unet), **{f"te.{k}": v for k, v in lora_tensors(trainer.text_encoder).items()}}

    zero = ddm_weights(params)
    assert zero.keys() == plain.keys()
    for k in plain:
        torch.testing.assert_close(zero[k], plain[k], rtol=1e-6, atol=1e-7, msg=k)
    assert any(plain[k].abs().sum() > 0 for k in plain if "lora_B" in k)  # training did move the LoRA
    # With α > 0 the indicator does change the LoRA weights, so the comparison above can fail.
    half = ddm_weights(dataclasses.replace(params, alpha=0.5))
    assert max(float((half[k] - plain[k]).abs().max()) for k in plain) > 1e-4


def test_merged_and_unmerged_lora_give_the_same_samples(base, data, tmp_path):
    method = DDM(small(learning_rate=3e-2, max_steps=5))
    method.prepare(base, data, tmp_path)
    prompts, seeds = [CAPTION] * 6, list(range(6))
    unmerged = base.replace(unet=method.trainer.unet.eval(), text_encoder=method.trainer.text_encoder.eval())
    a = sample(unmerged, prompts, seeds).astype(int)
    b = method.generate(prompts, seeds).astype(int)
    assert np.abs(a - b).max() <= 1  # uint8 rounding of float-equal images
    # The merged weights really differ from the base weights (so the check above is not vacuous).
    assert np.abs(b - sample(base, prompts, seeds).astype(int)).max() > 2
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 700])
    text = torch.randn(2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(method.components.unet(x, t, encoder_hidden_states=text).sample,
                                   method.trainer.unet(x, t, encoder_hidden_states=text).sample, rtol=1e-4, atol=1e-5)


def test_training_shares_the_frozen_base_weights_and_leaves_the_base_unchanged(data, tmp_path):
    """The LoRA copies share the base's frozen float32 weights (no second UNet in memory); training and
    merging rewrite none of them, and the merged UNet holds its own copies of only the merged layers."""
    base = tiny_sd_components(seed=0)
    before = {n: p.detach().clone() for n, p in base.unet.named_parameters()}
    pointers = {p.data_ptr() for p in base.unet.parameters()}
    method = DDM(small(learning_rate=3e-2, max_steps=5))
    method.prepare(base, data, tmp_path)
    frozen = [p for n, p in method.trainer.unet.named_parameters() if "lora_" not in n]
    assert frozen and all(p.data_ptr() in pointers for p in frozen)
    for n, p in base.unet.named_parameters():
        assert torch.equal(p, before[n]), f"{n} of the base UNet changed"
    merged = dict(method.components.unet.named_parameters())
    moved = [n for n in before if not torch.equal(merged[n], before[n])]
    assert moved and all(n.rsplit(".", 2)[-2] in ("to_q", "to_v") for n in moved)
    assert all(merged[n].data_ptr() not in pointers for n in moved)  # merged into copies, not the base


def test_indicator_input_follows_latent_shape(data):
    with_vae = tiny_sd_components(seed=1, with_vae=True, resolution=16)
    pixel = tiny_sd_components(seed=1, with_vae=False, resolution=16)
    assert DDMTrainer(with_vae, data, small()).indicator.in_features == 4 * 8 * 8
    trainer = DDMTrainer(pixel, data, small())
    assert trainer.indicator.in_features == 3 * 16 * 16
    mse, ce = trainer.losses(trainer.data.next_batch(4))  # pixel space: z0 is the image itself
    assert torch.isfinite(mse) and torch.isfinite(ce)


def test_reduced_training_moves_the_losses(base, data):
    """A short run teaches the indicator to separate target from non-target through the UNet."""
    trainer = DDMTrainer(base, data, small(alpha=0.5, learning_rate=3e-3, max_steps=30, batch_size=8))
    probe = trainer.data.next_batch(32)  # fixed images, noise and timesteps

    def probe_ce() -> float:
        with torch.no_grad():
            return trainer.losses(probe)[1].item()

    before = probe_ce()
    trainer.train()
    assert probe_ce() < 0.25 * before
    target = ddm.indicator_entropy(trainer, data.target, 1, 16, seed=3)
    nontarget = ddm.indicator_entropy(trainer, data.nontarget, 0, 16, seed=3)
    assert target["accuracy"] > 0.9 and nontarget["accuracy"] > 0.9
    assert target["entropy"] < 0.25 * np.log(2)  # far below chance (log 2)


# -- preparation: cache, reproducibility, errors ----------------------------------------------------


def test_prepare_is_cached_and_reproducible(base, data, tmp_path):
    first = DDM(small())
    first.prepare(base, data, tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "ddm.json").read_text())
    assert manifest["sha256"] == first.artefacts["ddm"]
    assert manifest["data"]["target_images"] == 24 and "indicator_entropy" in manifest
    again = DDM(small())
    again.prepare(base, data, tmp_path / "a")
    assert again.trainer.history == []  # loaded, not retrained
    assert again.artefacts == first.artefacts
    fresh = DDM(small())
    fresh.prepare(base, data, tmp_path / "b")
    assert fresh.artefacts == first.artefacts  # same seed, same weights
    other = DDM(small(alpha=0.1))
    other.prepare(base, data, tmp_path / "a")  # a new config retrains over the old artefact
    assert other.trainer.history and other.artefacts != first.artefacts
    assert first.fingerprint() != other.fingerprint()
    np.testing.assert_array_equal(first.generate([CAPTION] * 2, [5, 6]), fresh.generate([CAPTION] * 2, [5, 6]))


def test_params_and_errors(base, data, tmp_path):
    paper = DDMParams.paper()
    assert (paper.alpha, paper.w_rec, paper.learning_rate, paper.max_steps) == (0.05, 0.95, 1e-5, 4000)
    assert (paper.batch_size * paper.grad_accum, paper.lora_rank, paper.lora_alpha) == (4, 8, 32.0)
    assert DDMParams(alpha=0.1).reconstruction_weight == pytest.approx(0.9)
    assert METHODS.get("ddm") is DDM
    with pytest.raises(ConfigError, match="unknown parameter"):
        DDM.from_config({"alhpa": 0.1})
    with pytest.raises(ConfigError, match="alpha"):
        DDM.from_config({"alpha": -1})
    with pytest.raises(DataError, match="nontarget"):
        DDM(small()).prepare(base, MethodData(target=data.target), tmp_path)


# -- the world ---------------------------------------------------------------------------------------


def _world_or_skip():
    try:
        from benchmark.world import load_world

        return load_world()
    except (ImportError, FileNotFoundError, OSError) as exc:
        pytest.skip(f"world weights not available: {exc}")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="DDM's indicator shifts the colour share by a seed-dependent amount in either "
                   "direction, not towards balance (docs/methods/ddm.md); full suite −14 %, "
                   "seeds 0/1/2 at 64 images −8 % / +7 % / −7 %")
def test_world_ddm_reaches_target(tmp_path):
    """Soft FD at least 40 % below the baseline's; FID vs reference at most 1.5x the baseline's."""
    world = _world_or_skip()
    method = DDM()
    method.prepare(world.components, world.method_data, tmp_path)
    rows = world_colour_rows(world, {"baseline": lambda p, s: sample(world.components, p, s),
                                     "ddm": method.generate})
    assert rows["ddm"][0] <= 0.6 * rows["baseline"][0], rows
    assert rows["ddm"][1] <= 1.5 * rows["baseline"][1], rows
