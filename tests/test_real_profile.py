"""The `real` profile end to end on a tiny random StableDiffusionPipeline saved to disk (the layout of a
hub SD model: UNet, VAE, CLIP text encoder, CLIPTokenizer vocab.json/merges.txt, scheduler), plus
presets, speed flags, the offline errors, a saved tiny SDXL pipeline (more in test_sdxl.py), and
Inception FID features from a local cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from doubles import save_stand_in_inception

from benchmark.config import load_config
from benchmark.errors import ModelLoadError
from benchmark.real_models import PRESETS, load_sd, resolve
from benchmark.runner import Runner
from benchmark.tiny import save_tiny_sd_pipeline


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory):
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0, resolution=16)


def _config(tmp_path, tones_file, model, **extra):
    return load_config(None, {
        "profile": "real", "model": str(model), "methods": [{"name": "baseline"}],
        "prompt_sets": [str(tones_file)], "classifiers": ["palette"], "max_prompts": 1, "images_per_prompt": 2,
        "metrics": {"bootstrap": 20}, "output_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"),
        **extra,
    })


def test_real_profile_runs_a_saved_sd_pipeline_end_to_end(tmp_path, tones_file, sd_path, monkeypatch) -> None:
    from transformers import CLIPTokenizer

    monkeypatch.delenv("DEBIAS_BENCH_INCEPTION_DIR", raising=False)
    config = _config(tmp_path, tones_file, sd_path, sampler={"num_inference_steps": 4})
    runner = Runner(config, progress=False)
    parts = runner.profile.components
    assert isinstance(parts.tokenizer, CLIPTokenizer)  # loaded from vocab.json + merges.txt
    assert parts.vae is not None and parts.latent_scale == 2
    # the model's defaults, then the run config's sampler fields on top
    assert (parts.sampler.num_inference_steps, parts.sampler.guidance_scale, parts.sampler.height) == (50, 7.5, 16)
    assert runner.components().sampler.num_inference_steps == 4
    run_dir = runner.run()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["failures"] == []
    info = results["models"]["profile_info"]
    # no preset for a local folder: the model's own scheduler and resolution, SD's default steps/guidance
    assert info["preset"] is None and info["model"] == str(sd_path)
    assert (info["scheduler"], info["prediction_type"], info["resolution"]) == ("DDIMScheduler", "epsilon", 16)
    assert (info["steps"], info["guidance"], info["dtype"], info["attention"]) == (50, 7.5, "float32", "sdpa")
    assert info["compile"] is False and info["vae_slicing"] is False
    assert set(info["paper_sampling"]) == {"ddm", "invdiff", "selfdebias", "difflens"}
    sampler = results["models"]["base"]["sampler"]
    assert (sampler["num_inference_steps"], sampler["guidance_scale"], sampler["height"]) == (4, 7.5, 16)
    frame = pd.read_parquet(run_dir / "predictions.parquet")
    assert len(frame) == 2 and frame["image_sha256"].nunique() == 2  # 1 prompt × 2 seeds, distinct images
    np.testing.assert_allclose(frame["palette/tone/warm"] + frame["palette/tone/cool"], 1.0)
    from PIL import Image

    sample = sorted((run_dir / "samples").glob("*.png"))[0]
    assert Image.open(sample).size == (16, 16)


def test_presets_resolve_ids_aliases_and_native_resolutions() -> None:
    assert resolve("sd14") == ("CompVis/stable-diffusion-v1-4", PRESETS["sd14"])
    assert resolve("sd21")[1].resolution == 768 and resolve("sd21")[1].prediction_type == "v_prediction"
    assert resolve("sd15")[1].resolution == 512 == resolve("sd21-base")[1].resolution
    # an alias keeps its own id (that is what is cached) but gets the preset's settings
    assert resolve("runwayml/stable-diffusion-v1-5") == ("runwayml/stable-diffusion-v1-5", PRESETS["sd15"])
    assert resolve("someone/finetuned-sd") == ("someone/finetuned-sd", None)


def test_missing_model_names_the_id_and_hf_home(tmp_path, tones_file, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as err:
        Runner(_config(tmp_path, tones_file, "sd14"), progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "CompVis/stable-diffusion-v1-4" in msg and "preset sd14" in msg
    assert "HF_HOME" in msg and str(tmp_path / "hf") in msg and "hf download CompVis/stable-diffusion-v1-4" in msg
    with pytest.raises(ModelLoadError, match="local model folder not found") as err:
        load_sd(str(tmp_path / "no" / "such" / "model"))
    assert "\n" not in str(err.value)


def test_saved_sdxl_folder_loads_and_samples(tmp_path) -> None:
    from transformers import CLIPTextModelWithProjection

    from benchmark.sampling import sample
    from benchmark.tiny import save_tiny_sdxl_pipeline

    path = save_tiny_sdxl_pipeline(tmp_path / "tiny-sdxl", seed=0, resolution=16)
    parts, info = load_sd(str(path))
    assert isinstance(parts.text_encoder_2, CLIPTextModelWithProjection) and parts.tokenizer_2 is not None
    assert info["pipeline"] == "StableDiffusionXLPipeline" and info["force_zeros_for_empty_prompt"] is True
    assert (info["resolution"], info["guidance"]) == (16, 5.0)
    from dataclasses import replace

    images = sample(parts, ["a photo of a doctor"] * 2, [0, 1], replace(parts.sampler, num_inference_steps=2))
    assert images.shape == (2, 16, 16, 3) and not np.array_equal(images[0], images[1])


def test_sdxl_detection_preset_and_offline_error(tmp_path, monkeypatch) -> None:
    from benchmark.real_models import is_sdxl

    preset = PRESETS["sdxl"]
    assert resolve("sdxl") == ("stabilityai/stable-diffusion-xl-base-1.0", preset)
    assert (preset.resolution, preset.scheduler, preset.steps, preset.guidance) == (1024, "EulerDiscreteScheduler", 50, 5.0)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="preset sdxl") as err:
        load_sd("sdxl")
    assert "\n" not in str(err.value) and "hf download stabilityai/stable-diffusion-xl-base-1.0" in str(err.value)
    assert is_sdxl("stabilityai/stable-diffusion-xl-base-1.0") and is_sdxl("someone/sdxl-turbo-finetune")
    for fine in ("CompVis/stable-diffusion-v1-4", "/data/xlarge/sd15", "alex/sd15", "someone/pixlart"):
        assert not is_sdxl(fine), fine  # no false alarms on ids or paths that merely contain "xl"
    # a folder's model_index.json decides, whatever its name
    for name, cls, xl in (("plain-name", "StableDiffusionXLPipeline", True), ("my-xl", "StableDiffusionPipeline", False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": cls}))
        assert is_sdxl(str(folder)) is xl, name


def test_speed_flags_and_sdpa(sd_path, monkeypatch) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    monkeypatch.setenv("DEBIAS_BENCH_VAE_SLICING", "1")
    parts, info = load_sd(str(sd_path), compile=True)
    assert info["vae_slicing"] and parts.vae.use_slicing
    assert info["compile"] and parts.unet._compiled_call_impl is not None  # compiled lazily, never run here
    assert all(isinstance(p, AttnProcessor2_0) for p in parts.unet.attn_processors.values())
    plain, plain_info = load_sd(str(sd_path), compile=False, vae_slicing=False)
    assert not plain_info["vae_slicing"] and not plain.vae.use_slicing
    assert plain.fingerprint == parts.fingerprint  # speed flags do not change what is computed


def test_half_precision_path_on_cpu(sd_path) -> None:
    """The fp16-on-CUDA path, exercised with bfloat16 on the CPU: loads, samples, gives finite images."""
    from benchmark.sampling import sample

    parts, info = load_sd(str(sd_path), device=torch.device("cpu"), dtype=torch.bfloat16)
    assert info["dtype"] == "bfloat16" and parts.dtype == torch.bfloat16
    fp32, _ = load_sd(str(sd_path), device=torch.device("cpu"), dtype=torch.float32)
    assert parts.fingerprint != fp32.fingerprint  # precision changes images, so it changes cache keys
    from dataclasses import replace

    images = sample(parts, ["a photo of a doctor"], [0], replace(parts.sampler, num_inference_steps=3))
    assert images.shape == (1, 16, 16, 3) and images.dtype == np.uint8


# -- Inception FID features, from the documented local folder -------------------------------------------

def test_real_profile_uses_inception_from_the_local_folder(tmp_path, tones_file, sd_path, monkeypatch) -> None:
    folder = tmp_path / "inception"
    folder.mkdir()
    monkeypatch.setenv("DEBIAS_BENCH_INCEPTION_DIR", str(folder))
    with pytest.raises(ModelLoadError, match="Inception weights not found") as err:
        Runner(_config(tmp_path, tones_file, sd_path), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(folder / "inception-2015-12-05.pt") in msg and "DEBIAS_BENCH_INCEPTION_DIR" in msg

    (folder / "inception-2015-12-05.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelLoadError, match="cannot load TorchScript Inception") as err:
        Runner(_config(tmp_path, tones_file, sd_path), progress=False)
    assert "\n" not in str(err.value)

    save_stand_in_inception(folder / "inception-2015-12-05.pt")
    from benchmark.metrics.fid import InceptionFeatures
    from benchmark.profiles import real_profile

    profile = real_profile(_config(tmp_path, tones_file, sd_path))
    assert isinstance(profile.features, InceptionFeatures) and profile.features_name == "clean-fid-inception"
    assert profile.info["fid_features"] == "clean-fid-inception"
    # (FID itself on 2048-d features is covered in test_metrics_fid; its 2048² sqrtm takes ~45 s here)
    assert profile.features(np.zeros((2, 16, 16, 3), dtype=np.uint8)).shape == (2, 2048)
