"""How good an image path is, without downloaded networks: closeness to ground truth, realism and smoothness.

Seed 001 judges interpolations by LPIPS smoothness and FID / KID realism. Their Inception and AlexNet weights cannot
be had offline, so the same two properties are measured with what the project has:

- **realism of the interior frames** as a distribution distance to held-out real images, on the 68 scene statistics
  of :func:`benchmarks.default_model.scene_features` (standardised by the reference set, each feature's standard
  deviation floored at ``SD_FLOOR``, so a statistic that never varies in the reference, such as the colour bins of
  grey digits, does not turn a trace of colour into millions of standard deviations): the Fréchet distance (SFD;
  biased upwards at small sample sizes, compare it only between rows of equal counts) and the KID-style unbiased
  estimate of the squared MMD with the cubic polynomial kernel ``k(x, y) = (x . y / d + 1)^3`` (Binkowski et al. 2018;
  its expectation is 0 for two samples of one distribution, whatever the sample sizes);
- **"on the data" per frame**: the model's denoising error at a small t, ``mean_k |eps_theta(x_t^k, t) - eps^k|^2 / D``
  over fixed noise draws (lower: the frame looks like what the model was trained on);
- **smoothness**: consecutive-frame RMSE (mean and largest) and the evenness of steps (coefficient of variation).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from benchmarks.default_model import frechet_distance, scene_features

#: Floor of the reference standard deviation a feature is divided by (features are fractions, means and gradients of
#: pixels in [0, 1]; the smallest standard deviation over 500 held-out scenes is 0.0085, so scenes are unaffected).
SD_FLOOR = 0.005


def frechet(fa: np.ndarray, fb: np.ndarray, *, offset: float = 1e-6) -> float:
    """:func:`benchmarks.default_model.frechet_distance`, retried with ``offset * I`` added to both covariances when
    the matrix square root is not finite (a few samples give singular covariances; pytorch-fid does the same)."""
    from scipy import linalg

    try:
        fd = frechet_distance(fa, fb)
    except (ValueError, linalg.LinAlgError):
        fd = float("nan")
    if math.isfinite(fd):
        return fd
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    eye = offset * np.eye(fa.shape[1])
    sa, sb = np.cov(fa, rowvar=False) + eye, np.cov(fb, rowvar=False) + eye
    covmean = np.real(linalg.sqrtm(sa @ sb))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def kid(fa: np.ndarray, fb: np.ndarray) -> float:
    """Unbiased MMD^2 between feature sets with the cubic polynomial kernel ``(x . y / d + 1)^3``.

    ``MMD^2_u = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (n (n - 1)) - 2 mean k(a_i, b_j)``.
    fa: (m, d), fb: (n, d), m, n >= 2 -> float (can be slightly negative for equal distributions)
    """
    m, n, d = fa.shape[0], fb.shape[0], fa.shape[1]
    kaa = (fa @ fa.T / d + 1) ** 3
    kbb = (fb @ fb.T / d + 1) ** 3
    kab = (fa @ fb.T / d + 1) ** 3
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def realism(images: np.ndarray, ref_images: np.ndarray) -> dict:
    """SFD and KID of ``images`` against ``ref_images`` (both (N, H, W, 3) uint8), on scene statistics standardised
    by the reference (standard deviations floored at :data:`SD_FLOOR`); NaN for fewer than 2 images (no covariance,
    no unbiased estimate).  -> {"sfd", "kid", "n"}"""
    if images.shape[0] < 2:
        return {"sfd": float("nan"), "kid": float("nan"), "n": int(images.shape[0])}
    fr = scene_features(ref_images)
    mu, sd = fr.mean(0), np.maximum(fr.std(0), SD_FLOOR)
    fa, fb = (scene_features(images) - mu) / sd, (fr - mu) / sd
    return {"sfd": frechet(fa, fb), "kid": kid(fa, fb), "n": int(images.shape[0])}


@torch.no_grad()
def denoising_error(model, images: np.ndarray, *, t: int = 50, draws: int = 4, seed: int = 0) -> np.ndarray:
    """Per image: ``mean_k |eps_theta(sqrt(ab) x + sigma eps_k, t) - eps_k|^2 / D`` at timestep ``t`` with ``draws``
    fixed noise samples (the same for every image and method).  images (N, H, W, 3) uint8 -> (N,) float64"""
    from pipeline.images import image_to_tensor

    x = torch.cat([image_to_tensor(im, model.image_size) for im in images])  # (N, 3, H, W) in [-1, 1]
    x0 = model.encode(x)
    g = torch.Generator().manual_seed(seed)
    ab = float(model.alpha_bar(t).reshape(-1)[0])
    out = torch.zeros(x0.shape[0], dtype=torch.float64)
    for _ in range(draws):
        eps = torch.randn(x0.shape[1:], generator=g, dtype=x0.dtype).expand_as(x0)
        xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
        out += (model.eps(xt, t) - eps).double().pow(2).flatten(1).mean(1)
    return (out / draws).numpy()


def smoothness(images: np.ndarray) -> dict:
    """Consecutive-frame RMSE of a path (n, H, W, 3) in [0, 1]: mean, largest, and coefficient of variation
    (std / mean; 0 = evenly spaced steps)."""
    steps = np.sqrt(((images[1:] - images[:-1]) ** 2).mean(axis=(1, 2, 3)))  # (n - 1,)
    return {"step_mean": float(steps.mean()), "step_max": float(steps.max()),
            "step_cv": float(steps.std() / max(steps.mean(), 1e-12))}


def nearest_frames(images: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RMSE of each image to its nearest ground-truth frame, and that frame's index.  images (n, H, W, 3),
    truth (m, H, W, 3) in [0, 1] -> (n,), (n,)"""
    rmse = np.sqrt(((images[:, None] - truth[None]) ** 2).mean(axis=(2, 3, 4)))  # (n, m)
    return rmse.min(axis=1), rmse.argmin(axis=1)


#: The torchvision AlexNet weights file LPIPS's default backbone loads (from torch.hub's cache; never downloaded here).
LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"


def perceptual_metric() -> tuple[object | None, str]:
    """LPIPS (the ``lpips`` package, AlexNet backbone) when the package and its weights are on this machine, without
    the network: ``(dist, "LPIPS (AlexNet)")`` with ``dist(a, b)`` -> (n,) distances of two (n, H, W, 3) stacks in
    [0, 1]; else ``(None, why not)``. The benchmark reports LPIPS columns only in the first case."""
    try:
        import lpips
    except ImportError:
        return None, "the lpips package is not installed"
    backbone = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_BACKBONE)
    if not os.path.isfile(backbone):
        return None, f"LPIPS's AlexNet weights ({LPIPS_BACKBONE}) are not in torch.hub's cache"
    try:
        net = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as err:  # noqa: BLE001 -- any failure to build it means: not available here
        return None, f"lpips could not be built offline ({type(err).__name__})"

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ta = torch.as_tensor(a, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1
        tb = torch.as_tensor(b, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1
        with torch.no_grad():
            return net(ta, tb).flatten().numpy().astype(np.float64)

    return dist, "LPIPS (AlexNet)"


def perceptual_scores(dist, images: np.ndarray, truth: np.ndarray) -> dict:
    """With an LPIPS ``dist``: the interior frames' distance to their perceptually nearest true frame (mean) and
    the mean consecutive-frame distance.  images (n, H, W, 3), truth (m, H, W, 3) in [0, 1]."""
    inner = images[1:-1]
    m = truth.shape[0]
    near = [dist(np.repeat(im[None], m, axis=0), truth).min() for im in inner]
    steps = dist(images[1:], images[:-1])
    return {"lpips_nearest": float(np.mean(near)), "lpips_step_mean": float(steps.mean())}

