"""Reference architectures: three public checkpoints' configs, built with seeded random weights as diffusers folders.

Run:  python -m benchmarks.reference --arch cifar10-32|ddpm-256|sd15 --out DIR [--seed S] [--small | --channels-scale D]
      python -m benchmarks.reference --arch cifar10-32 --out /tmp/ref-cifar --measure   (build, load, time, JVP errors)

Weights cannot be downloaded here, and random weights answer every question of scale but image quality: memory, time,
the code paths of each block type (cross-attention, transformer blocks, six-level U-Nets), numerics in each dtype.

| ``--arch``   | public checkpoint                  | what is built                                                  |
|--------------|------------------------------------|----------------------------------------------------------------|
| cifar10-32   | google/ddpm-cifar10-32             | UNet2DModel 35.7M, 32x32 pixels (flat hub layout, below)        |
| ddpm-256     | google/ddpm-celebahq-256           | UNet2DModel 113.7M, 256x256 pixels (flat hub layout)            |
| sd15         | runwayml/stable-diffusion-v1-5     | UNet2DConditionModel 859.5M + AutoencoderKL 83.7M + CLIP text   |
|              |                                    | encoder 123.1M + a minimal tokenizer; 64x64x4 latents           |

The public configs are data in the repository (``benchmarks/reference_configs/``, copied verbatim from public
config.json files; ``SOURCES.md`` there says where each came from). Each folder is written as its hub repository lays it
out, so ``pipeline.load_model(DIR)`` meets what it would meet after a download: the google/ddpm-* repositories are flat
(``model_index.json``, ``config.json``, ``scheduler_config.json`` and the weights side by side); Stable Diffusion has
``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/``. Every ``config.json`` is the public dict
verbatim (diffusers and transformers fill in missing keys with their defaults at load time, as for the hub copy:
google/ddpm-cifar10-32's config predates ``attention_head_dim``, so its attention has diffusers' default 8-channel
heads, 32 of them). Weights are PyTorch's default initialisation under ``torch.manual_seed(seed)`` (the U-Net, then the
VAE with ``seed + 1``, the text encoder with ``seed + 2``), saved as float32 safetensors. Differences from the hub:

- sd15's ``model_index.json`` lists no safety checker nor feature extractor (none is built; both are ``[null, null]``).
- sd15's tokenizer is minimal: the vocabulary holds only ``<|startoftext|>`` (id 49406) and ``<|endoftext|>`` (49407,
  also the padding token) at their real ids, no merges, ``model_max_length`` 77. It tokenizes the empty prompt exactly
  as the real CLIP tokenizer does ([49406, 49407 x 76]), which is all ``load_model`` asks of it (the empty-prompt
  conditioning); any other prompt is out of its vocabulary. The real vocab.json / merges.txt are not available here.

**Small variants** (``--small``, or ``--channels-scale D``; :func:`scaled_configs`): the SAME configs (block types,
layers per block, cross-attention, transformer depth 1, attention heads of SD's U-Net: 8, CLIP's 12 heads and 12
layers, the schedules, the VAE's 4 latent channels) with every channel width divided by D (``--small``: D = 16) and
rounded up to what the group norms and heads need, norm groups divided by D too (so channels per group stay as in the
public model), and a small spatial size (``--small``: twice the U-Net's total downsampling). The
UNet2DModels keep their per-head width, so their heads number width / 8 (cifar10-32) or 1 (ddpm-256: ``null``, one
head). Small variants build and load in about a second; ``tests/test_reference.py`` runs on them.

| ``--small``  | U-Net widths              | norm groups | sample size         | parameters                            |
|--------------|---------------------------|-------------|---------------------|---------------------------------------|
| cifar10-32   | 8, 16, 16, 16             | 2           | 16                  | U-Net 0.15M                           |
| ddpm-256     | 8, 8, 16, 16, 32, 32      | 2           | 64                  | U-Net 0.45M                           |
| sd15         | 24, 40, 80, 80; text 48   | 2           | latent 16, image 128| U-Net 3.46M, VAE 0.33M, text 2.71M    |

**Measured** (``--measure``, once; a 2-core Intel Xeon (AVX-512, no bfloat16 / AMX instructions) shared with other
jobs (load average 3.5-6 on its 2 cores, so times vary up to 3x between runs), 2 torch threads, PyTorch 2.13 CPU,
diffusers 0.42.1, transformers 5.24. Build = random init + save; load = ``load_model`` float32 on the CPU; eps = one
warm float32 call at the full sample size, batch 1; RSS = the whole command's peak):

| ``--arch``   | parameters (all equal the public counts)          | folder     | build     | load  | eps  | peak RSS |
|--------------|---------------------------------------------------|------------|-----------|-------|------|----------|
| cifar10-32   | U-Net 35,746,307 (35.7M)                          | 143.0 MB   | 0.5-1.3 s | 0.1 s | 0.7 s| 0.9 GB   |
| ddpm-256     | U-Net 113,673,219 (113.7M)                        | 454.7 MB   | 1.8 s     | 0.1 s | 19 s*| 2.7 GB   |
| sd15         | U-Net 859,520,964 (859.5M), VAE 83,653,863        | 4,265.1 MB | 24 s      | 1.1 s | 28 s | 5.2 GB   |
|              | (83.7M), CLIP text encoder 123,060,480 (123.1M)   |            |           |       |      |          |

(*: ddpm-256's eps was timed on its first call, which carries one-time costs; the others on a second call.)

JVP error per dtype (:func:`jvp_relative_errors`: ``||out - ref|| / ||ref||`` against ``load_model(dtype=float64)``,
for h_t(x) and for D h_t(x)[v], x and v standard normal in model space, t = 500, batch 1; deterministic):

| ``--arch``              | float32 h | float32 JVP | bfloat16 h | bfloat16 JVP | JVP time f64 / f32 / bf16   |
|-------------------------|-----------|-------------|------------|--------------|-----------------------------|
| cifar10-32 (32x32)      | 1.1e-6    | 1.7e-6      | 0.016      | 0.026        | 2.3 / 1.1 / 2.8 s           |
| ddpm-256 (256x256)      | 1.3e-6    | 2.3e-6      | 0.021      | 0.039        | 42 / 13 / 24 s              |
| sd15 (latent 32x32)     | 1.1e-6    | 1.7e-6      | 0.015      | 0.026        | 20 / 10 / 18 s              |

cifar10-32 and ddpm-256 at their full sample size; sd15 at a 32x32 latent (``jvp_relative_errors(size=32)``, as
``--jvp-size 32``), not the full 64x64: the float64 copy of its U-Net alone is 6.9 GB (that run's peak RSS: 10.5 GB;
its float64 load took 52 s). JVP times are first calls. The small variants (``tests/test_reference.py``) give the
same orders: float32 JVP 0.9e-6 to 2.1e-6, bfloat16 JVP 0.019 to 0.045.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Where the public configs live (copied from public config.json files; see SOURCES.md there).
CONFIG_DIR = Path(__file__).resolve().parent / "reference_configs"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Arch:
    """One reference architecture: its public hub id, the prefix of its files in ``reference_configs/``, and its
    public parameter counts (per component)."""

    hub_id: str
    prefix: str
    latent: bool
    params: dict[str, int]


#: The reference architectures, by ``--arch`` name. Parameter counts are the public checkpoints' (SOURCES.md), as
#: counted on the modules built from the public configs.
ARCHS: dict[str, Arch] = {
    "cifar10-32": Arch("google/ddpm-cifar10-32", "ddpm-cifar10-32", False, {"unet": 35_746_307}),
    "ddpm-256": Arch("google/ddpm-celebahq-256", "ddpm-celebahq-256", False, {"unet": 113_673_219}),
    "sd15": Arch("runwayml/stable-diffusion-v1-5", "sd15", True,
                 {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
}

#: ``--small``: channel widths divided by this.
SMALL_DIVISOR = 16
#: The two special tokens of CLIP's tokenizer, at their real ids (the minimal tokenizer's whole vocabulary).
CLIP_SPECIAL_TOKENS = {"<|startoftext|>": 49406, "<|endoftext|>": 49407}


# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------
def public_config(arch: str, part: str) -> dict[str, Any] | None:
    """The public config dict of ``part`` ("unet", "scheduler", "model_index", "vae", "text_encoder") of ``arch``, as
    stored in ``reference_configs/``; None where the checkpoint has no such part."""
    a = _arch(arch)
    name = {"unet": "unet.config", "vae": "vae.config", "text_encoder": "text_encoder.config",
            "scheduler": "scheduler_config", "model_index": "model_index"}[part]
    path = CONFIG_DIR / f"{a.prefix}.{name}.json"
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def _arch(arch: str) -> Arch:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    return ARCHS[arch]


def _round_up(n: float, unit: int) -> int:
    return max(unit, unit * math.ceil(n / unit))


def _unet_head_unit(cfg: dict[str, Any]) -> int:
    """Channel multiple the U-Net's attention needs: UNet2DModel's ``attention_head_dim`` is the width of a head
    (diffusers' default 8 when the key is absent; ``null``: one head per block), UNet2DConditionModel's (SD 1.x) is
    the number of heads."""
    if cfg["_class_name"] == "UNet2DModel":
        head = cfg.get("attention_head_dim", 8)
        return int(head) if head else 1
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim") or 1
    return int(heads) if isinstance(heads, int) else math.lcm(*heads)


def scaled_configs(arch: str, divisor: int = 1, sample_size: int | None = None) -> dict[str, dict[str, Any]]:
    """The configs of ``arch`` with every channel width divided by ``divisor`` (1: the public configs, unchanged).

    Widths become ``ceil(w / divisor)`` rounded up to a multiple of the new norm group count (the public count divided
    by ``divisor``, at least 1) and of what the attention heads need; everything else (block types, layers per block,
    cross-attention, transformer depth, SD's and CLIP's head counts, CLIP's depth and vocabulary, schedules) is kept.
    ``sample_size`` sets the U-Net's spatial size (model space; the VAE's becomes it times the VAE's downsampling).
    Returns {"unet", "scheduler", "model_index"[, "vae", "text_encoder"]: config dict}.
    """
    a = _arch(arch)
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"channels scale (divisor) must be an integer >= 1, got {divisor!r}")
    parts = {p: public_config(arch, p) for p in ("unet", "scheduler", "model_index", "vae", "text_encoder")}
    out = {p: dict(c) for p, c in parts.items() if c is not None}
    if "model_index" not in out:  # google/ddpm-cifar10-32's is not among the public copies: the same as celebahq's
        out["model_index"] = public_config("ddpm-256", "model_index")
    unet = out["unet"]
    if divisor > 1:
        groups = max(1, unet["norm_num_groups"] // divisor)
        unit = math.lcm(groups, _unet_head_unit(unet))
        unet["norm_num_groups"] = groups
        unet["block_out_channels"] = [_round_up(c / divisor, unit) for c in unet["block_out_channels"]]
        if a.latent:
            text = out["text_encoder"]
            heads = text["num_attention_heads"]
            text["hidden_size"] = _round_up(text["hidden_size"] / divisor, heads)
            text["intermediate_size"] = _round_up(text["intermediate_size"] / divisor, 1)
            text["projection_dim"] = _round_up(text["projection_dim"] / divisor, 1)
            unet["cross_attention_dim"] = text["hidden_size"]
            vae = out["vae"]
            vgroups = max(1, vae["norm_num_groups"] // divisor)
            vae["norm_num_groups"] = vgroups
            vae["block_out_channels"] = [_round_up(c / divisor, vgroups) for c in vae["block_out_channels"]]
    if sample_size is not None:
        factor = 2 ** (len(unet["block_out_channels"]) - 1)
        if sample_size < factor or sample_size % factor:
            raise ValueError(f"sample_size must be a positive multiple of {factor} (the U-Net's downsampling) for "
                             f"{arch}, got {sample_size}")
        unet["sample_size"] = int(sample_size)
        if a.latent:
            out["vae"]["sample_size"] = int(sample_size) * 2 ** (len(out["vae"]["block_out_channels"]) - 1)
    if a.latent:  # no safety checker nor feature extractor is built
        mi = out["model_index"]
        mi.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    return out


def small_sample_size(arch: str) -> int:
    """``--small``'s spatial size: twice the public U-Net's total downsampling (the mid block sees 2x2)."""
    return 2 * 2 ** (len(public_config(arch, "unet")["block_out_channels"]) - 1)


# --------------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------------
def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_minimal_clip_tokenizer(folder: str | os.PathLike, model_max_length: int = 77) -> None:
    """A CLIPTokenizer whose vocabulary is CLIP's two special tokens at their real ids (no merges): it tokenizes the
    empty prompt as the real one does. Writes vocab.json, merges.txt and the tokenizer files of ``save_pretrained``."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "vocab.json", CLIP_SPECIAL_TOKENS)
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length)
    tok.save_pretrained(folder)


def build_reference(
    arch: str,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    divisor: int = 1,
    sample_size: int | None = None,
) -> dict[str, Any]:
    """Write ``arch`` with seeded random weights to the new or empty folder ``out`` (layout: module docstring).

    ``divisor`` and ``sample_size``: see :func:`scaled_configs` (1 and None: the public configs). Returns
    {"arch", "folder", "divisor", "params": {component: count}, "bytes": folder size, "build_s": seconds}.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

    a = _arch(arch)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder: choose a new one")
    cfgs = scaled_configs(arch, divisor, sample_size)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    params: dict[str, int] = {}

    def save(module, sub: str, cfg: dict, name: str, weights: str) -> None:
        target = out / sub if sub else out
        module.save_pretrained(target, safe_serialization=True)
        params[name] = _n_params(module)
        for stale in target.glob("*.bin"):  # never expected; only safetensors are loaded
            stale.unlink()
        _write_json(target / "config.json", cfg)  # the public (or scaled) dict verbatim
        assert (target / weights).is_file(), f"{target / weights} was not written"

    torch.manual_seed(seed)
    cls = UNet2DConditionModel if a.latent else UNet2DModel
    unet = cls.from_config(cfgs["unet"])
    save(unet, "unet" if a.latent else "", cfgs["unet"], "unet", "diffusion_pytorch_model.safetensors")
    del unet
    if a.latent:
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(seed + 1)
        vae = AutoencoderKL.from_config(cfgs["vae"])
        save(vae, "vae", cfgs["vae"], "vae", "diffusion_pytorch_model.safetensors")
        del vae
        torch.manual_seed(seed + 2)
        text_cfg = {k: v for k, v in cfgs["text_encoder"].items() if k not in ("architectures", "transformers_version")}
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        save(text, "text_encoder", cfgs["text_encoder"], "text_encoder", "model.safetensors")
        del text
        save_minimal_clip_tokenizer(out / "tokenizer", cfgs["text_encoder"]["max_position_embeddings"])
        _write_json(out / "scheduler" / "scheduler_config.json", cfgs["scheduler"])
    else:
        _write_json(out / "scheduler_config.json", cfgs["scheduler"])
    _write_json(out / "model_index.json", cfgs["model_index"])
    build_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"arch": arch, "folder": str(out), "divisor": divisor, "params": params, "bytes": size,
            "build_s": round(build_s, 2)}


# --------------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------------
def jvp_relative_errors(
    folder: str | os.PathLike,
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),
    *,
    t: int = 500,
    size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Relative errors of h and of the JVP ``D h_t(x)[v]`` in each dtype against float64, on one point.

    x and v are standard normal in model space (1, C, size, size) (``size``: the model's sample size by default);
    ``err = ||out_dtype - out_float64|| / ||out_float64||``. One model is held at a time. Returns
    {dtype: {"h": err, "jvp": err, "jvp_s": seconds of the JVP, "load_s": seconds of load_model}}.
    """
    from pipeline import load_model

    def run(dtype: str) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        t0 = time.perf_counter()
        m = load_model(folder, device=device, dtype=dtype)
        load_s = time.perf_counter() - t0
        s = size or m.sample_size
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, m.channels, s, s, generator=g, dtype=torch.float64)
        v = torch.randn(1, m.channels, s, s, generator=g, dtype=torch.float64)
        t0 = time.perf_counter()
        with torch.no_grad():
            h, jv = m.h_jvp(x, t, v)
        jvp_s = time.perf_counter() - t0
        return h.double().cpu(), jv.double().cpu(), jvp_s, load_s

    h64, jv64, jvp_s, load_s = run("float64")
    out = {"float64": {"h": 0.0, "jvp": 0.0, "jvp_s": round(jvp_s, 3), "load_s": round(load_s, 3)}}
    for dt in dtypes:
        h, jv, jvp_s, load_s = run(dt)
        out[dt] = {"h": float((h - h64).norm() / h64.norm()), "jvp": float((jv - jv64).norm() / jv64.norm()),
                   "jvp_s": round(jvp_s, 3), "load_s": round(load_s, 3)}
    return out


def measure(folder: str | os.PathLike, arch: str, *, jvp_dtypes: tuple[str, ...] = ("float32", "bfloat16"),
            jvp_size: int | None = None) -> dict[str, Any]:
    """Load the built ``folder`` with ``load_model`` (float32, CPU): load time and parameter counts (compared with the
    public ones when full size); then, unless ``jvp_dtypes`` is empty, :func:`jvp_relative_errors`."""
    from pipeline import load_model

    t0 = time.perf_counter()
    m = load_model(folder, device="cpu", dtype="float32")
    load_s = time.perf_counter() - t0
    params = {"unet": _n_params(m.unet)}
    if m.vae is not None:
        params["vae"] = _n_params(m.vae)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, m.channels, m.sample_size, m.sample_size, generator=g)
    with torch.no_grad():
        m.eps(x, 500)  # warm-up: the first call pays one-time costs
        t0 = time.perf_counter()
        m.eps(x, 500)
        eps_s = time.perf_counter() - t0
    info = {"load_s": round(load_s, 2), "loaded_params": params, "eps_s": round(eps_s, 3),
            "sample_size": m.sample_size, "kind": m.kind}
    del m
    if jvp_dtypes:
        info["jvp_errors"] = jvp_relative_errors(folder, tuple(jvp_dtypes), size=jvp_size)
    return info


def _in_repo(path: Path) -> bool:
    try:
        path.resolve().relative_to(REPO_ROOT)
        return True
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Command line: build one reference architecture (and, with ``--measure``, load and measure it)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n")[0])
    p.add_argument("--arch", required=True, choices=sorted(ARCHS), help="which public architecture to build")
    p.add_argument("--out", required=True, help="new or empty folder to write the diffusers model to (full-size "
                   "models: outside the repository, e.g. under /tmp)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default 0)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help=f"small variant: --channels-scale {SMALL_DIVISOR} and a "
                      "sample size of twice the U-Net's downsampling (same block layout; for tests)")
    size.add_argument("--channels-scale", type=int, default=1, metavar="D",
                      help="divide every channel width by D (same block layout; default 1: the public sizes)")
    p.add_argument("--sample-size", type=int, default=None,
                   help="U-Net spatial size in model space (default: the public one, or --small's)")
    p.add_argument("--measure", action="store_true", help="after building, load with load_model (float32, CPU), "
                   "check parameter counts, time eps, and measure the JVP's relative error against float64")
    p.add_argument("--jvp-dtypes", default="float32,bfloat16",
                   help="comma-separated dtypes whose JVP error --measure reports ('' to skip; default: "
                   "float32,bfloat16)")
    p.add_argument("--jvp-size", type=int, default=None, help="spatial size of --measure's JVP point "
                   "(default: the model's sample size)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    divisor = SMALL_DIVISOR if args.small else args.channels_scale
    sample_size = args.sample_size or (small_sample_size(args.arch) if args.small else None)
    out = Path(args.out)
    if divisor == 1 and _in_repo(out):
        p.error(f"{out} is inside the repository: write full-size models elsewhere (e.g. /tmp)")
    report = build_reference(args.arch, out, seed=args.seed, divisor=divisor, sample_size=sample_size)
    if divisor == 1:
        expected = ARCHS[args.arch].params
        report["params_match_public"] = report["params"] == expected
    if args.measure:
        dtypes = tuple(d for d in args.jvp_dtypes.split(",") if d)
        report["measure"] = measure(out, args.arch, jvp_dtypes=dtypes, jvp_size=args.jvp_size)
    report["threads"] = torch.get_num_threads()
    report["load_average"] = [round(v, 2) for v in os.getloadavg()]  # others' work on the machine skews times
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
