"""SDXL through the shared loop: a tiny random SDXL (two text encoders, text-time UNet) sampled by
:func:`benchmark.sampling.sample` gives StableDiffusionXLPipeline's images bit for bit; every method
prepares and generates on it; a saved tiny SDXL folder runs through the real profile end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from doubles import PixelEmbedder  # noqa: E402

from benchmark.components import SamplerConfig
from benchmark.hooks import record_mid_block, split_branches
from benchmark.images import ImageSet
from benchmark.sampling import TextCondition, encode_condition, encode_uncond, initial_latents, sample
from benchmark.tiny import save_tiny_sdxl_pipeline, tiny_sdxl_components
from methods.base import MethodData

PROMPTS = ["a photo of a doctor", "a photo of a nurse"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def xl():
    return tiny_sdxl_components(seed=0)


def _pipeline(parts, force_zeros: bool = True) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2, tokenizer=parts.tokenizer,
        tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=parts.scheduler,
        force_zeros_for_empty_prompt=force_zeros, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_images(parts, prompts, seeds, config: SamplerConfig, force_zeros: bool = True, **kwargs) -> np.ndarray:
    out = _pipeline(parts, force_zeros)(
        prompts, height=config.height, width=config.width, num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale, latents=initial_latents(parts, seeds, config), output_type="np",
        **kwargs).images
    return (out * 255).round().astype(np.uint8)


# -- the loop equals StableDiffusionXLPipeline -------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_matches_stable_diffusion_xl_pipeline_bit_for_bit(xl, scheduler) -> None:
    parts = xl
    if scheduler == "euler":  # what SDXL base ships (init_noise_sigma != 1, scaled model input)
        parts = xl.replace(scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                                            beta_schedule="scaled_linear", timestep_spacing="leading"))
    seeds = [11, 12]
    ours = sample(parts, PROMPTS, seeds)
    np.testing.assert_array_equal(ours, _pipeline_images(parts, PROMPTS, seeds, parts.sampler))
    assert not np.array_equal(ours[0], ours[1])


@pytest.mark.parametrize("force_zeros, negative", [(True, "a photo of a face"), (False, "")])
def test_negative_prompt_and_force_zeros_follow_the_pipeline(xl, force_zeros, negative) -> None:
    """Zeros only for an empty negative prompt on a force-zeros model; otherwise the text is encoded."""
    parts = xl.replace(force_zeros_for_empty_prompt=force_zeros)
    config = dataclasses.replace(xl.sampler, negative_prompt=negative)
    seeds = [3, 4]
    ours = sample(parts, PROMPTS, seeds, config)
    # the pipeline's "no negative prompt" is our empty one
    np.testing.assert_array_equal(ours, _pipeline_images(parts, PROMPTS, seeds, config, force_zeros,
                                                         negative_prompt=negative or None))
    assert not np.array_equal(ours, sample(xl, PROMPTS, seeds))  # differs from the zeroed default


def test_condition_is_the_pipelines_prompt_encoding(xl) -> None:
    cond = encode_condition(xl, PROMPTS, (16, 24))
    uncond = encode_uncond(xl, 2)
    embeds, neg, pooled, neg_pooled = _pipeline(xl).encode_prompt(PROMPTS, device=torch.device("cpu"))
    torch.testing.assert_close(cond.hidden, embeds, rtol=0, atol=0)
    assert cond.hidden.shape == (2, 16, 16 + 32)  # both encoders' penultimate states, side by side
    torch.testing.assert_close(cond.added["text_embeds"], pooled, rtol=0, atol=0)
    assert cond.added["time_ids"].tolist() == [[16, 24, 0, 0, 16, 24]] * 2  # (orig h, w, crop, target h, w)
    assert not uncond.hidden.any() and not uncond.added["text_embeds"].any()
    assert torch.equal(uncond.hidden, neg) and torch.equal(uncond.added["text_embeds"], neg_pooled)
    assert uncond.added["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 2  # size conditioning is kept
    both = TextCondition.cat([uncond, cond])
    assert len(both) == 4 and torch.equal(both[2:].added["text_embeds"], pooled)
    mixed = cond.where(torch.tensor([True, False]), encode_uncond(xl, 1))
    assert not mixed.hidden[0].any() and torch.equal(mixed.hidden[1], cond.hidden[1])


def test_mid_block_hook_sees_uncond_then_cond(xl) -> None:
    """Same seed, two prompts: the zeroed unconditional half is identical, the conditional half is not."""
    with record_mid_block(xl.unet) as seen:
        sample(xl, PROMPTS, [7, 7])
    assert len(seen) == xl.sampler.num_inference_steps
    uncond, cond = split_branches(seen[0], cfg=True)
    torch.testing.assert_close(uncond[0], uncond[1], rtol=0, atol=0)
    assert not torch.allclose(cond[0], cond[1])


def test_perf_bare_loop_equals_the_harness(xl) -> None:
    from benchmark.bare_loop import bare_loop

    np.testing.assert_array_equal(bare_loop(xl, PROMPTS, [5, 6]), sample(xl, PROMPTS, [5, 6]))


# -- every method on the tiny SDXL --------------------------------------------------------------------
def _target(n: int = 16, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    color = (rng.random(n) < 0.25).astype(np.int64)
    images = rng.integers(0, 60, size=(n, 16, 16, 3), dtype=np.uint8)
    for i, c in enumerate(color):
        images[i, 4:12, 4:12, 0 if c == 0 else 2] = 230
    return ImageSet(images, [PROMPTS[i % 2] for i in range(n)], name="xl-target", labels={"color": color})


def test_baseline_is_the_shared_sampler(xl, tmp_path) -> None:
    from methods.baseline import Baseline

    method = Baseline()
    method.prepare(xl, MethodData(), tmp_path)
    np.testing.assert_array_equal(method.generate(PROMPTS, [1, 2]), sample(xl, PROMPTS, [1, 2]))


def test_ddm_trains_lora_on_both_text_encoders(xl, tmp_path) -> None:
    from methods.ddm import DDM, DDMParams, DDMTrainer

    rng = np.random.default_rng(1)
    nontarget = ImageSet(rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), ["a photo"] * 4, "nontarget")
    data = MethodData(target=_target(), nontarget=nontarget, prompts=PROMPTS)
    params = DDMParams(batch_size=4, max_steps=2, entropy_images=4, learning_rate=3e-2)
    trainer = DDMTrainer(xl, data, dataclasses.replace(params, alpha=1.0))
    _, ce = trainer.losses(trainer.data.next_batch(4))
    ce.backward()
    grads = [p.grad for n, p in trainer.text_encoder_2.named_parameters() if "lora_B" in n]
    assert grads and sum(float(g.abs().sum()) for g in grads if g is not None) > 0  # reaches the second encoder

    method = DDM(params)
    method.prepare(xl, data, tmp_path)
    assert any(k.startswith("text_encoder_2.") for k in method.trainer.state_dict())
    merged = method.components
    assert merged.text_encoder_2 is not xl.text_encoder_2 and merged.tokenizer_2 is xl.tokenizer_2
    assert not any("lora" in n for n, _ in merged.text_encoder_2.named_parameters())
    images = method.generate(PROMPTS, [1, 2])
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    # a fresh DDM loads the artefact (LoRA of both encoders) and gives the same images
    again = DDM(params)
    again.prepare(xl, data, tmp_path)
    np.testing.assert_array_equal(again.generate(PROMPTS, [1, 2]), images)


def test_invdiff_guide_gets_the_added_conditions(xl, tmp_path) -> None:
    from methods.invdiff import InvDiff, InvDiffParams

    fast = dict(num_groups=2, group_epochs=20, loss_draws=1, train_steps=4, batch_size=8, learning_rate=5e-3,
                lr_warmup_steps=0, lr_schedule="constant")
    data = MethodData(target=_target(), attribute="color")
    zero = InvDiff(InvDiffParams(**{**fast, "ratio": 0.0}))
    zero.prepare(xl, data, tmp_path)  # the guide trains with pooled text + time ids (else the UNet raises)
    np.testing.assert_array_equal(zero.generate(PROMPTS, [1, 2]), sample(xl, PROMPTS, [1, 2]))
    method = InvDiff(InvDiffParams(**fast))
    method.prepare(xl, data, tmp_path)
    with record_mid_block(method.components.unet) as seen:
        images = method.generate(PROMPTS, [1, 2])
    assert images.shape == (2, 16, 16, 3) and len(seen) == xl.sampler.num_inference_steps
    assert seen[0].shape[0] == 4  # the base UNet's mid-block sees [uncond; cond]


def test_selfdebias_guides_on_sdxl(xl, tmp_path) -> None:
    from methods.selfdebias import SelfDebias, SelfDebiasParams

    params = SelfDebiasParams(num_samples=8, hidden_dim=32, step_embed_dim=8, epochs=2, train_batch=32, lam=1.0,
                              step_size=4.0, tau=0.1, guidance_batch=4, k_max=3)
    data = MethodData(prompts=PROMPTS, embedder=PixelEmbedder())
    seeds, prompts = [20, 21, 22, 23], [PROMPTS[0]] * 4
    baseline = sample(xl, prompts, seeds)
    method = SelfDebias(params)
    method.prepare(xl, data, tmp_path)
    guided = method.generate(prompts, seeds)
    assert guided.shape == (4, 16, 16, 3) and not np.array_equal(guided, baseline)
    off = SelfDebias(dataclasses.replace(params, lam=0.0))
    off.prepare(xl, data, tmp_path)
    np.testing.assert_array_equal(off.generate(prompts, seeds), baseline)


def test_difflens_two_pass_sampler_on_sdxl(xl, tmp_path) -> None:
    from doubles import MeanColourClassifier

    from methods.difflens import DiffLens, DiffLensParams

    params = DiffLensParams(samples_per_prompt=8, k=4, sae_steps=20, sae_batch=128, probe_epochs=2)
    method = DiffLens(params)
    method.prepare(xl, MethodData(prompts=PROMPTS, classifier=MeanColourClassifier()), tmp_path)
    seeds, prompts = [30, 31], PROMPTS
    edited = method.generate(prompts, seeds)
    assert edited.shape == (2, 16, 16, 3) and not np.array_equal(edited, sample(xl, prompts, seeds))
    # the identity edit (no push, rivals kept): the two-pass loop is the plain one
    method.params.mode, method.params.ratio, method.params.suppress_others = "add", 0.0, None
    np.testing.assert_array_equal(method.generate(prompts, seeds), sample(xl, prompts, seeds))


# -- the real profile on a saved SDXL folder ------------------------------------------------------------
@pytest.fixture(scope="module")
def xl_path(tmp_path_factory):
    return save_tiny_sdxl_pipeline(tmp_path_factory.mktemp("models") / "tiny-sdxl", seed=0, resolution=16)


def test_real_profile_runs_a_saved_sdxl_pipeline(tmp_path, tones_file, xl_path, monkeypatch) -> None:
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from benchmark.config import load_config
    from benchmark.runner import Runner

    monkeypatch.delenv("DEBIAS_BENCH_INCEPTION_DIR", raising=False)
    config = load_config(None, {
        "profile": "real", "model": str(xl_path), "methods": [{"name": "baseline"}],
        "prompt_sets": [str(tones_file)], "classifiers": ["palette"], "max_prompts": 1, "images_per_prompt": 2,
        "metrics": {"bootstrap": 20}, "output_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"),
        "sampler": {"num_inference_steps": 3},
    })
    runner = Runner(config, progress=False)
    parts = runner.profile.components
    assert isinstance(parts.tokenizer_2, CLIPTokenizer) and isinstance(parts.text_encoder_2, CLIPTextModelWithProjection)
    assert parts.force_zeros_for_empty_prompt and not parts.upcast_vae
    # a local SDXL folder gets StableDiffusionXLPipeline's default guidance, 5.0
    assert (parts.sampler.num_inference_steps, parts.sampler.guidance_scale, parts.sampler.height) == (50, 5.0, 16)
    run_dir = runner.run()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["failures"] == []
    info = results["models"]["profile_info"]
    assert (info["pipeline"], info["guidance"], info["force_zeros_for_empty_prompt"]) == \
        ("StableDiffusionXLPipeline", 5.0, True)
    import pandas as pd

    frame = pd.read_parquet(run_dir / "predictions.parquet")
    assert len(frame) == 2 and frame["image_sha256"].nunique() == 2


def test_sdxl_in_float16_decodes_with_a_float32_vae(xl_path) -> None:
    """The fp16-on-CUDA path on the CPU: the UNet and encoders are float16, the VAE stays float32."""
    from benchmark.real_models import load_sd

    parts, info = load_sd(str(xl_path), device=torch.device("cpu"), dtype=torch.float16)
    assert parts.dtype == torch.float16 and parts.text_encoder_2.dtype == torch.float16
    assert parts.upcast_vae and parts.vae.dtype == torch.float32 and info["vae_dtype"] == "float32"
    images = sample(parts, PROMPTS[:1], [0], dataclasses.replace(parts.sampler, num_inference_steps=2))
    assert images.shape == (1, 16, 16, 3) and images.dtype == np.uint8
    parts.to("cpu", torch.float16)
    assert parts.vae.dtype == torch.float32  # Components.to keeps the upcast

