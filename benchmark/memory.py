"""Will a method's recordings fit in memory? Checked after the first recorded batch, so that a
preparation that cannot finish stops with one line instead of being killed hours later.

DiffLens and SelfDebias keep the UNet's mid-block output h of every recorded image at every step on
the host, in float32; at Stable Diffusion 1.5's 512 px and 50 steps that is 16.4 MB per image and
branch, so their world defaults (hundreds of images per prompt) do not fit at real scale.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.errors import ConfigError


def available_memory() -> int | None:
    """Bytes of memory this process can still get: the system's ``MemAvailable`` (Linux), lowered to
    what a cgroup (v2) limit leaves; None where neither is known."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_recording_fits(method: str, per_image: int, images: int, copies: float, prompts: int, knob: str,
                         available: int | None) -> None:
    """Refuse (ConfigError, one line) recordings of ``images`` images of ``per_image`` bytes each, held
    ``copies`` times over at the peak, when they need more than ``available`` bytes; the message names
    the largest value of the per-prompt ``knob`` that fits. ``available`` None: not checked."""
    need = per_image * images * copies
    if available is None or need <= available:
        return
    fits = int(available // (per_image * copies) // max(prompts, 1))
    advice = (f"set {knob} to {fits} or fewer for {prompts} prompts, or prepare on fewer prompts" if fits else
              f"not one image per prompt fits for {prompts} prompts: prepare on fewer prompts, at a lower "
              "resolution, or on a machine with more memory")
    raise ConfigError(
        f"{method}: recording h for {images} vanilla images needs about {need / 1e9:.1f} GB "
        f"({per_image / 1e6:.1f} MB per image, held {copies:g} times over at the peak), more than the "
        f"{available / 1e9:.1f} GB available; {advice}")
