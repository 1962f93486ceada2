"""Quality benchmark of a scene model (the embedded default): DDIM reconstruction PSNR and a sample-quality distance.

Run:  python -m benchmarks.default_model --model default --out benchmarks/results

1. **Reconstruction.** ``n_recon`` held-out scenes are DDIM-inverted to ``t_end`` (default T - 1) and generated back,
   both with ``steps`` DDIM steps (``pipeline.ddim``); PSNR in dB on [0, 1] images: mean and 10th percentile. Each
   inversion in ``inversions`` is measured, written ``METHOD`` or ``METHOD+N`` (``pipeline.ddim.invert(method=METHOD,
   fixed_point=N)``): ``corrected``, the library's default (predict-evaluate-correct, ``steps + 1`` model calls),
   ``explicit``, plain DDIM inversion (``steps`` calls), and ``+N`` fixed-point iterations (``N * steps`` more calls).
   The headline figure is the first entry. Generation is the same plain DDIM sampler for all of them.
2. **Sample quality: the scene-statistics Fréchet distance (SFD).** No downloaded network is needed: each image is
   described by 68 hand-picked statistics (below), standardised by the reference set's mean and std, and two sets are
   compared by the Fréchet distance between Gaussians fitted to their features,
   ``FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. Reported for ``n_samples`` DDIM samples against
   ``n_samples`` held-out scenes, with two references on the same scale: the **floor** (two disjoint held-out sets of
   the same size: what finite-sample noise alone gives) and the **scale** (the floor set, degraded by a Gaussian blur
   of sigma 0.7 px and Gaussian noise of std 0.04, against the reference set: what a visibly degraded model gives).

Features per image (x in [0, 1], (H, W, 3)):

| group                | dims | what                                                              |
|----------------------|------|-------------------------------------------------------------------|
| colour moments       | 6    | per-channel mean and std                                          |
| colour histogram     | 27   | joint RGB histogram, 3 bins per channel, as fractions             |
| gradient magnitude   | 5    | Sobel magnitude of luminance: mean, std, 50/90/99th percentiles   |
| edge density         | 3    | fraction of pixels with gradient magnitude > 0.1, 0.25, 0.5       |
| low-frequency DCT    | 27   | 2-D DCT-II (orthonormal) 3x3 lowest coefficients per channel      |

3. **Denoising error.** The training objective on held-out scenes: mean squared error of the predicted noise,
   ``E |eps_theta(sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, t) - eps|^2``, at the timesteps ``DENOISE_TIMESTEPS`` on the
   ``n_recon`` reconstruction scenes (noise seeded by ``seed``): how well the model knows the family it is measured
   on, free of sampler effects. Lower is better; ``1`` is what predicting zero gives.

``--family`` picks the scene family (``pipeline.scenes.FAMILIES``) of every held-out set; ``--name`` the stem of the
written files (default ``default_model``), so one model can be measured on several families side by side.

Held-out seeds used (``pipeline.scenes.HELDOUT_SEEDS``): reconstruction ``[0, n_recon)``, sample reference
``[10_000, 10_000 + n)``, floor set ``[20_000, 20_000 + n)`` (offsets into the split).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import load_model  # noqa: E402
from pipeline.ddim import INVERT_METHODS, generate, invert, sample  # noqa: E402
from pipeline.errors import InputError  # noqa: E402
from pipeline.model import EMBEDDED_MODELS, embedded_model_dir  # noqa: E402
from pipeline.scenes import FAMILIES, HELDOUT_SEEDS, make_dataset  # noqa: E402

REF_OFFSET = 10_000  # held-out offset of the sample-quality reference set
FLOOR_OFFSET = 20_000  # held-out offset of the floor set
BLUR_SIGMA = 0.7  # degraded copy: Gaussian blur, pixels
NOISE_STD = 0.04  # degraded copy: Gaussian noise std on [0, 1]
HIST_BINS = 3  # colour histogram bins per channel
DCT_K = 3  # lowest K x K DCT coefficients per channel
DENOISE_TIMESTEPS = (50, 200, 500, 800)  # timesteps of the held-out denoising error


@dataclass(frozen=True)
class BenchConfig:
    model: str = "default"  # model source for pipeline.load_model
    out: str = "benchmarks/results"  # folder for default_model.{json,md} and the sample grid
    n_recon: int = 256  # held-out scenes for DDIM reconstruction
    n_samples: int = 1000  # DDIM samples (and reference scenes) for the SFD
    steps: int = 50  # DDIM steps (inversion and generation each)
    t_end: int | None = None  # inversion depth (None: T - 1)
    batch_size: int = 64  # images per model call
    seed: int = 0  # noise seed of the samples
    threads: int | None = None  # torch CPU threads
    inversions: tuple[str, ...] = ("corrected", "explicit", "explicit+1")  # METHOD[+N]: invert(method, fixed_point)
    family: str = "smooth"  # scene family of every held-out set (pipeline.scenes.FAMILIES)
    name: str = "default_model"  # stem of the written files: NAME.{json,md}, NAME.samples.png, NAME.recon.png


# --------------------------------------------------------------------------------------------------------------------
# Features and distances
# --------------------------------------------------------------------------------------------------------------------
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D (n, n): coefficients of a signal x are D @ x."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def scene_features(images: np.ndarray) -> np.ndarray:
    """The 68 scene statistics of the module docstring.  images: (N, H, W, 3) uint8 -> (N, 68) float64."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputError(f"images must be a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    from scipy import ndimage

    x = images.astype(np.float64) / 255.0  # (N, H, W, 3)
    n, h, w, _ = x.shape
    moments = np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)  # (N, 6)
    q = np.minimum((x * HIST_BINS).astype(int), HIST_BINS - 1)  # (N, H, W, 3) bin index
    code = (q[..., 0] * HIST_BINS + q[..., 1]) * HIST_BINS + q[..., 2]  # (N, H, W)
    hist = np.stack([np.bincount(c.ravel(), minlength=HIST_BINS**3) for c in code]) / (h * w)  # (N, 27)
    lum = x @ np.array([0.299, 0.587, 0.114])  # (N, H, W)
    gx = ndimage.sobel(lum, axis=2, mode="nearest") / 8.0
    gy = ndimage.sobel(lum, axis=1, mode="nearest") / 8.0
    mag = np.sqrt(gx**2 + gy**2).reshape(n, -1)  # (N, HW)
    grad = np.concatenate([mag.mean(1, keepdims=True), mag.std(1, keepdims=True),
                           np.percentile(mag, [50, 90, 99], axis=1).T], axis=1)  # (N, 5)
    edges = np.stack([(mag > t).mean(1) for t in (0.1, 0.25, 0.5)], axis=1)  # (N, 3)
    dh, dw = _dct_matrix(h)[:DCT_K], _dct_matrix(w)[:DCT_K]  # (K, H), (K, W)
    dct = np.einsum("kh,nhwc,lw->nckl", dh, x, dw).reshape(n, -1)  # (N, 3 K^2)
    return np.concatenate([moments, hist, grad, edges, dct], axis=1)


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).  fa: (Na, D), fb: (Nb, D) -> float."""
    from scipy import linalg

    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = np.real(linalg.sqrtm(sa @ sb))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def sfd(a: np.ndarray, b: np.ndarray, ref: np.ndarray) -> float:
    """Scene-statistics Fréchet distance between image sets a and b, features standardised by the set ``ref``."""
    fr = scene_features(ref)
    mu, sd = fr.mean(0), fr.std(0) + 1e-6
    return frechet_distance((scene_features(a) - mu) / sd, (scene_features(b) - mu) / sd)


def degrade(images: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Blur (Gaussian, sigma BLUR_SIGMA px) and add Gaussian noise (std NOISE_STD).  (N, H, W, 3) uint8 -> same."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(images.astype(np.float64) / 255.0, sigma=(0, BLUR_SIGMA, BLUR_SIGMA, 0))
    x = x + np.random.default_rng(seed).normal(0.0, NOISE_STD, x.shape)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (data range 255).  (N, H, W, 3) x2 -> (N,)."""
    from skimage.metrics import peak_signal_noise_ratio

    return np.array([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b, strict=True)])


# --------------------------------------------------------------------------------------------------------------------
# Model runs
# --------------------------------------------------------------------------------------------------------------------
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def parse_inversion(spec: str) -> tuple[str, int]:
    """``"METHOD"`` or ``"METHOD+N"`` -> (method, fixed-point iterations); raises InputError on anything else."""
    method, plus, n = spec.strip().partition("+")
    if method not in INVERT_METHODS or (plus and not n.isdigit()):
        raise InputError(f"an inversion is METHOD or METHOD+N with METHOD in {INVERT_METHODS}, got {spec!r}")
    return method, int(n or 0)


def inversion_calls(spec: str, steps: int) -> int:
    """Model calls per image of the inversion ``spec`` with ``steps`` steps (see :func:`pipeline.ddim.invert`)."""
    method, n = parse_inversion(spec)
    return steps * (1 + n) + (method == "corrected")


def reconstruct(model, images: np.ndarray, *, t_end: int, steps: int, batch_size: int,
                inversion: str = "corrected") -> np.ndarray:
    """DDIM-invert to t_end with the inversion ``inversion`` (METHOD[+N]) and generate back.
    uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)."""
    method, fixed_point = parse_inversion(inversion)
    out = []
    for i in range(0, len(images), batch_size):
        x0 = to_tensor(images[i : i + batch_size]).to(model.device, model.dtype)
        xt = invert(model, x0, t_end=t_end, num_steps=steps, method=method, fixed_point=fixed_point)
        out.append(to_uint8(sample(model, xt, t_start=t_end, num_steps=steps)))
        print(f"  reconstructed {min(i + batch_size, len(images))}/{len(images)}", flush=True)
    return np.concatenate(out)


def draw_samples(model, n: int, *, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """n DDIM samples from noise at T - 1 (batch k uses seed + k).  -> uint8 (n, H, W, 3)."""
    out = []
    for k, i in enumerate(range(0, n, batch_size)):
        out.append(to_uint8(generate(model, min(batch_size, n - i), num_steps=steps, seed=seed + k)))
        print(f"  sampled {min(i + batch_size, n)}/{n}", flush=True)
    return np.concatenate(out)


@torch.no_grad()
def denoising_error(model, images: np.ndarray, timesteps=DENOISE_TIMESTEPS, *, batch_size: int = 64,
                    seed: int = 0) -> dict[int, float]:
    """Mean squared error of the predicted noise on ``images`` at each timestep (the training loss, unweighted).
    uint8 (N, H, W, 3) -> {t: mse}. The noise is seeded (``seed`` + t), so two models see the same noisy inputs."""
    out = {}
    for t in timesteps:
        gen = torch.Generator().manual_seed(int(seed) + int(t))
        ab = float(model.alphas_cumprod[int(t)])
        total, count = 0.0, 0
        for i in range(0, len(images), batch_size):
            x0 = to_tensor(images[i : i + batch_size]).to(torch.float64)
            eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            xt = (ab**0.5 * x0 + (1 - ab) ** 0.5 * eps).to(model.device, model.dtype)
            pred = model.eps(xt, int(t)).to(torch.float64).cpu()
            total += float(((pred - eps) ** 2).sum())
            count += eps.numel()
        out[int(t)] = total / count
    return out


def grid(images: np.ndarray, *, cols: int = 8, gap: int = 2, scale: int = 4) -> np.ndarray:
    """Tile images (N, H, W, 3) uint8 into a grid with white gaps, upscaled ``scale``x (nearest)."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    g = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        g[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = im
    return g.repeat(scale, 0).repeat(scale, 1)


# --------------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------------
def run_benchmark(cfg: BenchConfig) -> dict:
    """Run the measurements; write ``NAME.{json,md}``, ``NAME.samples.png`` and ``NAME.recon.png`` in ``cfg.out``
    (``NAME`` = ``cfg.name``)."""
    from PIL import Image

    if cfg.n_recon < 1 or cfg.n_samples < 2 or cfg.steps < 1:
        raise InputError("n_recon >= 1, n_samples >= 2 and steps >= 1 are required")
    if not cfg.inversions:
        raise InputError("at least one inversion is required")
    if cfg.family not in FAMILIES:
        raise InputError(f"family must be one of {', '.join(FAMILIES)}, got {cfg.family!r}")
    if not cfg.name or Path(cfg.name).name != cfg.name:
        raise InputError(f"name must be a plain file stem, got {cfg.name!r}")
    for spec in cfg.inversions:
        parse_inversion(spec)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(cfg.model)
    size = model.sample_size
    t_end = cfg.t_end if cfg.t_end is not None else model.num_train_timesteps - 1
    res: dict = {"config": asdict(cfg), "model_source": cfg.model, "size": size,
                 "parameters": sum(p.numel() for p in model.unet.parameters()), "device": str(model.device),
                 "torch_threads": torch.get_num_threads(), "t_end": t_end, "family": cfg.family}
    info = (embedded_model_dir(cfg.model) if cfg.model in EMBEDDED_MODELS else Path(cfg.model)) / "train_info.json"
    if info.is_file():
        res["train_info"] = json.loads(info.read_text())

    heldout = make_dataset(HELDOUT_SEEDS[: cfg.n_recon], size, family=cfg.family)
    res["denoising_error"] = {str(t): v for t, v in denoising_error(model, heldout, batch_size=cfg.batch_size,
                                                                    seed=cfg.seed).items()}
    print("denoising error " + ", ".join(f"t={t}: {v:.4f}" for t, v in res["denoising_error"].items()), flush=True)
    res["recon_methods"], recons = {}, {}
    for spec in cfg.inversions:
        t0 = time.time()
        recons[spec] = reconstruct(model, heldout, t_end=t_end, steps=cfg.steps, batch_size=cfg.batch_size,
                                   inversion=spec)
        q = psnr(heldout, recons[spec])
        res["recon_methods"][spec] = {
            "n": cfg.n_recon, "inversion": spec, "inversion_calls": inversion_calls(spec, cfg.steps),
            "generation_calls": cfg.steps, "psnr_mean": float(q.mean()), "psnr_p10": float(np.percentile(q, 10)),
            "psnr_median": float(np.median(q)), "seconds": time.time() - t0}
        print(f"reconstruction with {spec} inversion: PSNR mean {q.mean():.2f} dB, "
              f"p10 {np.percentile(q, 10):.2f} dB", flush=True)
    res["recon"] = res["recon_methods"][cfg.inversions[0]]
    recon = recons[cfg.inversions[0]]

    t0 = time.time()
    samples = draw_samples(model, cfg.n_samples, steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed)
    t_sample = time.time() - t0
    ref = make_dataset(HELDOUT_SEEDS[REF_OFFSET : REF_OFFSET + cfg.n_samples], size, family=cfg.family)
    floor = make_dataset(HELDOUT_SEEDS[FLOOR_OFFSET : FLOOR_OFFSET + cfg.n_samples], size, family=cfg.family)
    res["sfd"] = {"n": cfg.n_samples, "samples_vs_heldout": sfd(samples, ref, ref),
                  "floor_heldout_vs_heldout": sfd(floor, ref, ref),
                  "scale_degraded_vs_heldout": sfd(degrade(floor), ref, ref),
                  "degradation": f"Gaussian blur sigma {BLUR_SIGMA} px + noise std {NOISE_STD}",
                  "sampling_seconds": t_sample}
    print(f"SFD samples {res['sfd']['samples_vs_heldout']:.2f}, floor {res['sfd']['floor_heldout_vs_heldout']:.2f}, "
          f"degraded {res['sfd']['scale_degraded_vs_heldout']:.2f}", flush=True)

    Image.fromarray(grid(samples[:64])).save(out / f"{cfg.name}.samples.png")
    Image.fromarray(grid(np.concatenate([heldout[:32], recon[:32]]))).save(out / f"{cfg.name}.recon.png")
    res["command"] = reproduce_command(cfg)
    (out / f"{cfg.name}.json").write_text(json.dumps(res, indent=1))
    (out / f"{cfg.name}.md").write_text(markdown(res))
    return res


def reproduce_command(cfg: BenchConfig) -> str:
    """The command line that reproduces ``cfg``."""
    args = ["python", "-m", "benchmarks.default_model", "--model", cfg.model, "--out", cfg.out,
            "--n-recon", str(cfg.n_recon), "--n-samples", str(cfg.n_samples), "--steps", str(cfg.steps),
            "--seed", str(cfg.seed)]
    if cfg.t_end is not None:
        args += ["--t-end", str(cfg.t_end)]
    args += ["--inversions", ",".join(cfg.inversions)]
    if cfg.family != "smooth":
        args += ["--family", cfg.family]
    if cfg.name != "default_model":
        args += ["--name", cfg.name]
    return shlex.join(args)


def markdown(res: dict) -> str:
    """A markdown summary of a result dict."""
    r, s = res["recon"], res["sfd"]
    family = res.get("family", "smooth")
    den = res.get("denoising_error", {})
    return "\n".join([
        "# Model quality" + ("" if family == "smooth" else f" on the {family} scene family"),
        "",
        f"Model `{res['model_source']}` ({res['parameters']:,} parameters, {res['size']}x{res['size']}), "
        f"DDIM {res['config']['steps']} steps, device {res['device']} ({res['torch_threads']} threads); held-out "
        f"scenes of the `{family}` family.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| DDIM inversion (`{r['inversion']}`) to t={res['t_end']} + reconstruction PSNR, mean ({r['n']} "
        f"held-out scenes) | {r['psnr_mean']:.2f} dB |",
        f"| same, 10th percentile | {r['psnr_p10']:.2f} dB |",
        f"| same, median | {r['psnr_median']:.2f} dB |",
        f"| SFD: {s['n']} DDIM samples vs {s['n']} held-out scenes | {s['samples_vs_heldout']:.2f} |",
        f"| SFD floor: held-out vs disjoint held-out | {s['floor_heldout_vs_heldout']:.2f} |",
        f"| SFD scale: degraded disjoint held-out ({s['degradation']}) vs held-out | "
        f"{s['scale_degraded_vs_heldout']:.2f} |",
        *[f"| denoising error (noise MSE) at t={t}, {r['n']} held-out scenes | {v:.4f} |" for t, v in den.items()],
        "",
        f"Reconstruction by inversion method ({res['config']['steps']}-step plain DDIM generation in all rows; "
        "`pipeline.ddim.invert`):",
        "",
        "| inversion | model calls (inversion + generation) | PSNR mean | p10 | median |",
        "|---|---|---|---|---|",
        *[f"| `{k}` | {v['inversion_calls']} + {v['generation_calls']} | {v['psnr_mean']:.2f} dB | "
          f"{v['psnr_p10']:.2f} dB | {v['psnr_median']:.2f} dB |" for k, v in res["recon_methods"].items()],
        "",
        "SFD: Fréchet distance between Gaussians fitted to 68 standardised scene statistics (colour moments and "
        "histogram, gradient magnitude, edge density, low-frequency DCT); see `benchmarks/default_model.py`. Lower is "
        "better; the floor is what two samples of the true distribution give.",
        "",
        f"Reconstruction (`{r['inversion']}`) took {r['seconds']:.0f} s, sampling {s['sampling_seconds']:.0f} s "
        "(wall clock, shared CPU).",
        "",
        f"Images: `{res['config'].get('name', 'default_model')}.samples.png` (the first 64 samples), "
        f"`{res['config'].get('name', 'default_model')}.recon.png` (rows 1-4: held-out scenes, rows 5-8: their "
        "reconstructions).",
        "",
        "Reproduce:",
        "",
        f"    {res['command']}",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = BenchConfig()
    p.add_argument("--model", default=d.model, help="model source for load_model (default: the embedded model)")
    p.add_argument("--out", default=d.out, help="output folder")
    p.add_argument("--n-recon", type=int, default=d.n_recon, help="held-out scenes to reconstruct")
    p.add_argument("--n-samples", type=int, default=d.n_samples, help="samples (and reference scenes) for the SFD")
    p.add_argument("--steps", type=int, default=d.steps, help="DDIM steps")
    p.add_argument("--t-end", type=int, default=None, help="inversion depth (default: T - 1)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--inversions", default=",".join(d.inversions),
                   help="comma-separated inversions to reconstruct with, METHOD or METHOD+N (N fixed-point "
                        f"iterations), METHOD in {', '.join(INVERT_METHODS)}; the first is the headline figure")
    p.add_argument("--family", default=d.family, choices=FAMILIES,
                   help="scene family of the held-out sets (default: smooth)")
    p.add_argument("--name", default=d.name, help="stem of the written files (default: default_model)")
    a = p.parse_args(argv)
    inversions = tuple(v.strip() for v in a.inversions.split(",") if v.strip())
    try:
        for spec in inversions:
            parse_inversion(spec)
    except InputError as e:
        p.error(str(e))
    if not inversions:
        p.error("--inversions needs at least one entry")
    cfg = BenchConfig(model=a.model, out=a.out, n_recon=a.n_recon, n_samples=a.n_samples, steps=a.steps,
                      t_end=a.t_end, batch_size=a.batch_size, seed=a.seed, threads=a.threads, inversions=inversions,
                      family=a.family, name=a.name)
    print("reproduce with:", reproduce_command(cfg), flush=True)
    run_benchmark(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
