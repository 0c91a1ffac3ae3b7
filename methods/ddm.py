"""DDM: Debiasing Diffusion Model (Huang, Tsao, Su, Chiang; arXiv 2503.12536).

Fine-tune the base model with LoRA on a biased *target* image set together with a small
unrelated *non-target* set. A small MLP, the *indicator* C, reads the UNet's noise prediction
and must tell target (label 1) from non-target (label 0) samples. UNet LoRA, text-encoder LoRA
and indicator are trained jointly by one AdamW on

    L = w_rec · ‖ε̂ − ε‖² + α · CE(C(flatten(ε̂)), y),    ε̂ = UNet(z_t, t, TextEnc(caption)),

with z_t the forward-noised latent of the image (z_0 = VAE latent, or the image itself in pixel
space). The paper's text speaks of "denoised latents"; the official code, followed here, feeds the
raw noise prediction ε̂ (docs/methods/ddm.md measures both readings on the world). No
sensitive-attribute labels are used. At sampling time the LoRA is merged into the
weights (``merge_and_unload``) and the plain sampler runs: no guidance term, no indicator.

Official code: ``chun61205/DebiasingDiffusionModel`` (training script, indicator, entropy tool).
Deviations from the paper / official code are marked ``DEVIATION`` below and summed up here:

* ``w_rec`` defaults to ``1 − α`` (the shipped example's 0.95 / 0.05 at α = 0.05), so that α = 0
  is plain LoRA fine-tuning; an explicit ``w_rec`` gives the additive form ``L_LDM + α L_ind``.
* Batches hold target and non-target images in equal parts (``balance_sets``; the official code
  shuffles one pool). On the world (100:1) the pooled indicator answered "target" for everything
  and DDM changed nothing (colour soft FD 0.354 → 0.369); balanced, the indicator separates the sets
  (accuracy 1.00 / 0.996) and the same training lowers colour FD to 0.304 and shade FD 0.394 → 0.285.
* Images are resized and centre-cropped (the official code random-crops) so that training is
  deterministic given the seed.
* The text-encoder LoRA is merged at sampling time; the official inference script looks for it
  under a different folder name than the training script writes, so it silently skips it.
* The world's defaults train with a larger batch, a higher learning rate and far fewer steps than
  the paper (see :class:`DDMParams`); :meth:`DDMParams.paper` gives the paper's values.
* The official LoRA target list also names ``query``/``value`` (attention names of old diffusers
  releases); current diffusers only has ``to_q``/``to_v``, so those alone are targeted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark import progress as training_bars
from benchmark.components import Components
from benchmark.errors import ConfigError, DataError
from benchmark.hashing import hash_value
from benchmark.images import ImageSet, to_tensor
from benchmark.sampling import encode_condition, sample, unet_eps
from methods.base import Dropout, Method, MethodData, NonNegative, NonNegativeInt, Positive, PositiveInt

if TYPE_CHECKING:
    from diffusers import DDPMScheduler
    from peft import LoraConfig

# diffusers and peft are imported where they are used: a run whose DDM images are all cached never
# prepares DDM and so never pays their import (several seconds)

ARTEFACT = "ddm"


@dataclass
class DDMParams:
    """Hyper-parameters. Defaults are the world's values; comments give the official ones."""

    alpha: NonNegative = 0.05  # indicator weight w_ind; official example 0.05 (argparse default 0)
    w_rec: float | None = None  # None = 1 − α (example: 0.95 with α = 0.05); DEVIATION: see module doc
    lora_rank: PositiveInt = 8  # official 8
    lora_alpha: Positive = 32.0  # official 32
    lora_dropout: Dropout = 0.0  # official 0
    unet_targets: tuple[str, ...] = ("to_q", "to_v")  # official to_q, to_v (+ legacy query, value)
    train_text_encoder: bool = True  # official example: True (LoRA on q_proj, v_proj)
    text_targets: tuple[str, ...] = ("q_proj", "v_proj")  # official q_proj, v_proj
    indicator_hidden: tuple[int, ...] = (1024, 512)  # official Linear(d→1024)→ReLU→Linear(1024→512)→ReLU→Linear(512→2)
    learning_rate: Positive = 1e-3  # official example 1e-5 (argparse default 5e-6); world: tiny model, few steps
    adam_betas: tuple[Dropout, Dropout] = (0.9, 0.999)  # official (0.9, 0.999)
    weight_decay: NonNegative = 1e-2  # official 1e-2
    adam_eps: Positive = 1e-8  # official 1e-8
    clip_value: Positive = 1.0  # official clip_grad_value_ 1.0 (value clipping, not norm)
    batch_size: PositiveInt = 64  # official 1; world: 8x8 images make large batches cheap
    grad_accum: PositiveInt = 1  # official 4
    max_steps: NonNegativeInt = 300  # official example 4000
    seed: int = 0  # official: accelerate set_seed
    balance_sets: bool = True  # official: False (one shuffled pool); DEVIATION: see TrainingData
    sample_batch: PositiveInt = 256  # images per sampler call at generation time (does not change images)
    entropy_images: PositiveInt = 256  # images per set for the indicator-entropy diagnostic

    def __post_init__(self) -> None:
        self.unet_targets = tuple(self.unet_targets)
        self.text_targets = tuple(self.text_targets)
        self.indicator_hidden = tuple(int(h) for h in self.indicator_hidden)
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        if self.w_rec is not None and self.w_rec < 0:
            raise ValueError(f"w_rec must be >= 0, got {self.w_rec}")

    @property
    def reconstruction_weight(self) -> float:
        return 1.0 - self.alpha if self.w_rec is None else float(self.w_rec)

    @classmethod
    def paper(cls) -> DDMParams:
        """The official example script's configuration (``examples/*.sh``)."""
        return cls(alpha=0.05, w_rec=0.95, learning_rate=1e-5, batch_size=1, grad_accum=4, max_steps=4000)


class Indicator(nn.Module):
    """The DDM indicator: an MLP on the flattened noise prediction, two logits (non-target, target)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (1024, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return self.net(eps.flatten(1).float())


def latent_features(base: Components) -> int:
    """Indicator input size: channels × H × W of the latent at the sampler's resolution."""
    s = base.latent_scale
    return base.latent_channels * (base.sampler.height // s) * (base.sampler.width // s)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block under a fixed global seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def lora_config(params: DDMParams, targets: Sequence[str]) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout, bias="none",
                      target_modules=list(targets))


def check_targets(base: Components, params: DDMParams) -> None:
    """Every LoRA target names a module of the UNet (and of the text encoders when they train): a
    one-line error before training instead of peft's traceback."""
    wanted = [("unet", base.unet, params.unet_targets)]
    if params.train_text_encoder:
        wanted += [("text", m, params.text_targets) for m in (base.text_encoder, base.text_encoder_2) if m is not None]
    for what, module, targets in wanted:
        names = {name.rsplit(".", 1)[-1] for name, _ in module.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise ConfigError(f"ddm: {what}_targets {missing} name no module of the {type(module).__name__} "
                              f"(linear layers it has include: {', '.join(sorted(n for n in names if n.startswith(('to_', 'q_', 'k_', 'v_', 'out'))))[:200]})")


def add_lora(base: Components, params: DDMParams) -> tuple[nn.Module, nn.Module]:
    """Float32 copies of UNet and text encoder with fresh LoRA adapters (seeded init).

    The base components are never modified. The text encoder is a plain frozen copy when
    ``train_text_encoder`` is off.
    """
    from peft import get_peft_model

    unet, text_encoder = _trainable_copy(base.unet), _trainable_copy(base.text_encoder)
    with _seeded(params.seed):
        unet = get_peft_model(unet, lora_config(params, params.unet_targets))
        if params.train_text_encoder:
            text_encoder = get_peft_model(text_encoder, lora_config(params, params.text_targets))
        else:
            text_encoder.requires_grad_(False)
    return unet, text_encoder


def add_lora_2(base: Components, params: DDMParams) -> nn.Module | None:
    """SDXL's second text encoder, treated like the first (float32 copy; LoRA on ``text_targets`` when
    ``train_text_encoder``, as diffusers' SDXL LoRA scripts do for both encoders); None without one.
    Seeded apart (``seed + 2``) so that adding it leaves the UNet and first-encoder init unchanged."""
    if base.text_encoder_2 is None:
        return None
    from peft import get_peft_model

    text_encoder = _trainable_copy(base.text_encoder_2)
    if not params.train_text_encoder:
        return text_encoder.requires_grad_(False)
    with _seeded(params.seed + 2):
        return get_peft_model(text_encoder, lora_config(params, params.text_targets))


def shared_copy(module: nn.Module, fresh: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """A copy of ``module``'s structure whose parameters and buffers are the original's (not a second
    copy of the weights), except those whose name ``fresh`` picks, which are copied."""
    memo = {id(t): t for n, t in (*module.named_parameters(), *module.named_buffers()) if not fresh(n)}
    return deepcopy(module, memo)


def _trainable_copy(module: nn.Module) -> nn.Module:
    """The module to wrap with LoRA without touching the base: in float32 it shares the base's frozen
    weights (SD-XL's UNet and encoders are 13 GB that a full copy would double); another dtype is
    copied and cast, as training runs in float32 even when sampling runs in float16."""
    if next(module.parameters()).dtype == torch.float32:
        return shared_copy(module)
    return deepcopy(module).to(dtype=torch.float32)


def make_indicator(base: Components, params: DDMParams) -> Indicator:
    with _seeded(params.seed + 1):
        return Indicator(latent_features(base), params.indicator_hidden).to(base.device)


def prepare_images(images: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (N,H,W,3) → float (N,3,height,width) in [-1,1]; resize shorter side, centre crop.

    DEVIATION: the official code random-crops; a centre crop keeps training deterministic.
    """
    x = to_tensor(images)
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        size = (max(height, round(h * scale)), max(width, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        x = x[..., top : top + height, left : left + width]
    return x


@dataclass
class Batch:
    images: torch.Tensor  # (B,3,H,W) in [-1,1]
    captions: list[str]
    labels: torch.Tensor  # (B,) 1 = target, 0 = non-target
    noise: torch.Tensor  # (B,C,h,w) latent-shaped
    timesteps: torch.Tensor  # (B,)


class TrainingData:
    """Labelled image sets (target = 1, non-target = 0), drawn in seeded shuffled epochs.

    The official code concatenates the sets and shuffles them together. DEVIATION: with
    ``balanced=True`` every batch holds the sets in equal parts (each set drawn from its own
    shuffled epochs). The world's target set is 100× its non-target set; drawn from one pool the
    indicator learned to answer "target" for everything (measured: non-target accuracy 0.00, CE at
    the label entropy), so its loss carried no signal into the LoRA. Noise and timesteps come from
    the same seeded generator, so a run is reproducible.
    """

    def __init__(self, base: Components, sets: Sequence[tuple[ImageSet, int]], seed: int,
                 balanced: bool = False) -> None:
        cfg = base.sampler
        self.images = torch.cat([prepare_images(s.images, cfg.height, cfg.width) for s, _ in sets])
        self.captions = [c for s, _ in sets for c in s.captions]
        self.labels = torch.cat([torch.full((len(s),), label, dtype=torch.long) for s, label in sets])
        s = base.latent_scale
        self.latent_shape = (base.latent_channels, cfg.height // s, cfg.width // s)
        self.num_train_timesteps = int(base.scheduler.config.num_train_timesteps)
        self.generator = torch.Generator("cpu").manual_seed(seed)
        bounds = np.cumsum([0] + [len(s) for s, _ in sets])
        # one index pool per set when balanced, else a single pool over all images
        self._pools = ([torch.arange(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
                       if balanced else [torch.arange(int(bounds[-1]))])
        self._orders = [torch.empty(0, dtype=torch.long) for _ in self._pools]

    def __len__(self) -> int:
        return len(self.labels)

    def _draw(self, pool: int, size: int) -> list[int]:
        idx: list[int] = []
        while len(idx) < size:
            if len(self._orders[pool]) == 0:
                members = self._pools[pool]
                self._orders[pool] = members[torch.randperm(len(members), generator=self.generator)]
            take = min(size - len(idx), len(self._orders[pool]))
            idx += self._orders[pool][:take].tolist()
            self._orders[pool] = self._orders[pool][take:]
        return idx

    def next_batch(self, size: int) -> Batch:
        k = len(self._pools)
        idx = [i for pool in range(k) for i in self._draw(pool, size // k + (pool < size % k))]
        index = torch.tensor(idx)
        noise = torch.randn((size, *self.latent_shape), generator=self.generator)
        t = torch.randint(0, self.num_train_timesteps, (size,), generator=self.generator)
        return Batch(self.images[index], [self.captions[i] for i in idx], self.labels[index], noise, t)


def training_scheduler(base: Components) -> DDPMScheduler:
    """The forward process (``add_noise``) of the base model's own noise schedule."""
    from diffusers import DDPMScheduler

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
    return DDPMScheduler(**{k: base.scheduler.config[k] for k in keep if k in base.scheduler.config})


class DDMTrainer:
    """One DDM training run: the forward pass, the two losses and the optimiser step."""

    def __init__(self, base: Components, data: MethodData, params: DDMParams) -> None:
        if data.target is None or data.nontarget is None:
            raise DataError("ddm: MethodData needs both `target` (biased set) and `nontarget` images")
        self.base, self.params = base, params
        self.device = base.device
        self.unet, self.text_encoder = add_lora(base, params)
        self.text_encoder_2 = add_lora_2(base, params)
        self.indicator = make_indicator(base, params)
        self.scheduler = training_scheduler(base)
        if len(data.target) == 0 or len(data.nontarget) == 0:
            raise DataError("ddm: the target and non-target image sets must not be empty")
        self.data = TrainingData(base, [(data.target, 1), (data.nontarget, 0)], params.seed, params.balance_sets)
        self.optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=params.learning_rate, betas=params.adam_betas,
                                           weight_decay=params.weight_decay, eps=params.adam_eps)
        self.history: list[dict[str, float]] = []

    def trainable_parameters(self) -> list[nn.Parameter]:
        mods = [self.unet, self.text_encoder, self.text_encoder_2, self.indicator]
        return [p for m in mods if m is not None for p in m.parameters() if p.requires_grad]

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """z_0: the image itself in pixel space, else a VAE posterior sample × scaling factor."""
        images = images.to(self.device)
        vae = self.base.vae
        if vae is None:
            return images
        with torch.no_grad():
            z = vae.encode(images.to(vae.dtype)).latent_dist.sample(generator=self.data.generator)
        return (z * vae.config.scaling_factor).float()

    def predict(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂, regression target) for a batch."""
        z0 = self.latents(batch.images)
        noise, t = batch.noise.to(self.device), batch.timesteps.to(self.device)
        zt = self.scheduler.add_noise(z0, noise, t)
        # the shared text conditioning, through the LoRA copies (SDXL: both encoders, size = the images')
        parts = self.base.replace(unet=self.unet, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2)
        text = encode_condition(parts, batch.captions, tuple(batch.images.shape[-2:]), grad=True)
        eps_hat = unet_eps(self.unet, zt, t, text)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(z0, noise, t)
        else:
            target = noise
        return eps_hat, target

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(MSE, CE) of one batch; both are differentiable w.r.t. LoRA and indicator."""
        eps_hat, target = self.predict(batch)
        mse = F.mse_loss(eps_hat.float(), target.float())
        ce = F.cross_entropy(self.indicator(eps_hat), batch.labels.to(self.device))
        return mse, ce

    def step(self) -> dict[str, float]:
        p = self.params
        self.unet.train()
        self.indicator.train()
        totals = {"mse": 0.0, "ce": 0.0}
        for _ in range(p.grad_accum):
            mse, ce = self.losses(self.data.next_batch(p.batch_size))
            loss = (p.reconstruction_weight * mse + p.alpha * ce) / p.grad_accum
            loss.backward()
            totals["mse"] += mse.item() / p.grad_accum
            totals["ce"] += ce.item() / p.grad_accum
        torch.nn.utils.clip_grad_value_(self.trainable_parameters(), p.clip_value)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.history.append(totals)
        return totals

    def train(self, steps: int | None = None, progress: Callable[[int, dict], None] | None = None) -> None:
        total = self.params.max_steps if steps is None else steps
        with training_bars.bar(total, "ddm training") as bar:
            for i in range(total):
                totals = self.step()
                bar.set_postfix(mse=f"{totals['mse']:.4f}", ce=f"{totals['ce']:.4f}", refresh=False)
                bar.update(1)
                if progress is not None:
                    progress(i, totals)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA weights (UNet, text encoder) and indicator weights, flat, for safetensors."""
        from peft import get_peft_model_state_dict

        out = {f"unet.{k}": v for k, v in get_peft_model_state_dict(self.unet).items()}
        if self.params.train_text_encoder:
            out.update({f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(self.text_encoder).items()})
            if self.text_encoder_2 is not None:
                out.update({f"text_encoder_2.{k}": v for k, v in get_peft_model_state_dict(self.text_encoder_2).items()})
        out.update({f"indicator.{k}": v for k, v in self.indicator.state_dict().items()})
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        set_peft_model_state_dict(self.unet, part("unet."))
        if self.params.train_text_encoder:
            set_peft_model_state_dict(self.text_encoder, part("text_encoder."))
            if self.text_encoder_2 is not None:
                set_peft_model_state_dict(self.text_encoder_2, part("text_encoder_2."))
        self.indicator.load_state_dict(part("indicator."))

    def merged(self) -> dict[str, nn.Module]:
        """UNet and text encoder(s) with the LoRA folded into the weights, in the base dtype, by
        :class:`Components` field name (``text_encoder_2`` only for SDXL)."""
        modules = {"unet": self.unet, "text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}
        out = {}
        for name, module in modules.items():
            if module is None:
                continue
            merge = name == "unet" or self.params.train_text_encoder
            if self.base.dtype == torch.float32:
                # only the weights a merge rewrites are copied; the frozen rest stays shared with the base
                module = shared_copy(module, lambda n, merge=merge: merge and n.endswith("base_layer.weight"))
            else:
                module = deepcopy(module)
            module = module.merge_and_unload() if merge else module
            out[name] = (module.to(self.base.dtype) if self.base.dtype != torch.float32 else module).eval()
        return out


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy H(softmax(logits)) in nats."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def indicator_entropy(trainer: DDMTrainer, images: ImageSet, label: int, n: int, seed: int) -> dict[str, float]:
    """Official ``utils/entropy.py`` diagnostic: noise real images at a random t, run UNet and
    indicator, report the mean softmax entropy (nats; log 2 = 0.693 is chance) and accuracy."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(images), size=min(n, len(images)), replace=False)
    subset = ImageSet(images.images[pick], [images.captions[i] for i in pick], images.name)
    batch = TrainingData(trainer.base, [(subset, label)], seed).next_batch(len(subset))
    trainer.unet.eval()
    eps_hat, _ = trainer.predict(batch)
    logits = trainer.indicator(eps_hat)
    return {"entropy": float(softmax_entropy(logits).mean()),
            "accuracy": float((logits.argmax(-1) == label).float().mean())}


class DDM(Method):
    """DDM as a benchmark method: LoRA + indicator fine-tuning, then plain sampling."""

    name = "ddm"
    paper_sampling = {"model": "sd15", "scheduler": "PNDMScheduler", "steps": 40, "guidance": 7.5, "resolution": 512}
    reads = ("target", "nontarget")
    Params = DDMParams

    def check(self, base: Components) -> None:
        check_targets(base, self.params)

    def cache_key(self, base: Components, data: MethodData) -> str:
        return hash_value({"method": self.name, "params": dataclasses.asdict(self.params), "base": base.fingerprint,
                           "target": getattr(data.target, "fingerprint", None),
                           "nontarget": getattr(data.nontarget, "fingerprint", None)})

    def prepare(self, base: Components, data: MethodData, workdir: Path, *, log: Callable[[str], None] | None = None) -> None:
        """Train (or load the cached) LoRA + indicator, merge the LoRA, keep merged components."""
        self.workdir = Path(workdir)
        self.check(base)
        key = self.cache_key(base, data)
        trainer = DDMTrainer(base, data, self.params)
        tensors = self.load_tensors(ARTEFACT)
        manifest_path = self.workdir / f"{ARTEFACT}.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and tensors is not None else {}
        if tensors is not None and manifest.get("key") == key:
            trainer.load_state_dict(tensors)
        else:
            every = max(1, self.params.max_steps // 10)

            def report(i: int, totals: dict) -> None:
                if log is not None and (i + 1) % every == 0:
                    log(f"ddm step {i + 1}/{self.params.max_steps}: mse {totals['mse']:.4f} ce {totals['ce']:.4f}")

            trainer.train(progress=report)
            n = self.params.entropy_images
            diag = {"target": indicator_entropy(trainer, data.target, 1, n, self.params.seed),
                    "nontarget": indicator_entropy(trainer, data.nontarget, 0, n, self.params.seed)}
            # The safetensors metadata holds only deterministic fields, so equal training gives an equal
            # file hash; the runner's manifest records how long preparation took.
            meta = {"key": key, "method": self.name, "params": dataclasses.asdict(self.params), "base": base.fingerprint,
                    "data": {"target": data.target.fingerprint, "target_images": len(data.target),
                             "nontarget": data.nontarget.fingerprint, "nontarget_images": len(data.nontarget)}}
            hist = trainer.history
            self.save_tensors(ARTEFACT, trainer.state_dict(), meta=meta)
            manifest = {
                **meta,
                "sha256": self.artefacts[ARTEFACT],
                "first_losses": hist[0] if hist else None,
                "final_losses": _mean_losses(hist[-max(1, len(hist) // 10):]) if hist else None,
                "indicator_entropy": diag,
            }
            self.save_report(manifest_path.stem, manifest)
        self.manifest = manifest
        # On a float32 base the trainer shares the base's weights; otherwise it holds float32 copies of the
        # UNet and text encoders that sampling never uses (10 GB on SDXL), so they are let go.
        self.trainer = trainer if base.dtype == torch.float32 else None
        self.components = base.replace(**trainer.merged(),
                                       fingerprint=hash_value({"base": base.fingerprint, "ddm": self.artefacts}))

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        if self.components is None:
            raise RuntimeError("ddm: call prepare() before generate()")
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        b = self.params.sample_batch
        chunks = [sample(self.components, prompts[i : i + b], seeds[i : i + b]) for i in range(0, len(prompts), b)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.components.sampler.height, self.components.sampler.width, 3), np.uint8)


def _mean_losses(history: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]}
