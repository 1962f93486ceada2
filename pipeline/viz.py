"""Pictures of results: heat maps, curve plots, image strips, GIFs and 3D geodesic plots.

Shared by the app and scripts. Nothing here computes geometry: functions take arrays the library produced and return
uint8 images, matplotlib figures (built with ``matplotlib.figure.Figure``, never ``pyplot``, so they are thread-safe
under a Gradio queue), plotly figures, or files.

Coordinates: images are uint8 (H, W, 3); a point is ``(x, y)`` in pixels of the image it was clicked on, as Gradio's
``SelectData.index`` gives it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Colours of the clicked points and their curves (matplotlib "tab10" order, RGB 0-255).
POINT_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
_MPL_COLORS = tuple("#{:02x}{:02x}{:02x}".format(*c) for c in POINT_COLORS)


# --------------------------------------------------------------------------------------------------------------------
# Heat maps
# --------------------------------------------------------------------------------------------------------------------
def colorize(values: np.ndarray, *, cmap: str = "inferno", vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """(h, w) float map -> uint8 (h, w, 3) through a matplotlib colormap, normalised to [vmin, vmax] (default: its
    range)."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be a (h, w) map, got shape {v.shape}")
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    scaled = np.clip((np.nan_to_num(v, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    rgba = colormaps[cmap](scaled)  # (h, w, 4) float
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def upsample(image: np.ndarray, size: tuple[int, int], *, smooth: bool = False) -> np.ndarray:
    """Resize a uint8 (h, w, 3) picture to ``size = (H, W)``: nearest (patch grids stay crisp) or bilinear."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR if smooth else Image.NEAREST))


def heatmap(values: np.ndarray, size: tuple[int, int] | None = None, *, cmap: str = "inferno", **norm) -> np.ndarray:
    """A (h, w) map as a uint8 (H, W, 3) colour picture, nearest-upsampled to ``size`` when given."""
    pic = colorize(values, cmap=cmap, **norm)
    return upsample(pic, size) if size is not None else pic


def overlay(image: np.ndarray, values: np.ndarray, *, alpha: float = 0.6, cmap: str = "inferno", **norm) -> np.ndarray:
    """Heat map of ``values`` blended over a uint8 (H, W, 3) ``image`` (map resized to the image).  -> (H, W, 3)"""
    pic = heatmap(values, image.shape[:2], cmap=cmap, **norm).astype(np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * pic
    return out.round().clip(0, 255).astype(np.uint8)


def mark_points(image: np.ndarray, points: Sequence[tuple[float, float]], *,
                labels: Sequence[str] | None = None) -> np.ndarray:
    """Draw numbered cross-hairs at ``points`` ((x, y) pixels) on a copy of a uint8 (H, W, 3) image."""
    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    r = max(2, min(im.size) // 24)
    for i, (x, y) in enumerate(points):
        c = POINT_COLORS[i % len(POINT_COLORS)]
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=max(1, r // 2))
        draw.ellipse((x - r + 1, y - r + 1, x + r - 1, y + r - 1), outline=c, width=max(1, r // 3))
        if labels is not None and min(im.size) >= 64:
            draw.text((x + r + 1, y - r), labels[i], fill=c)
    return np.asarray(im)


# --------------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------------
def _figure(width: float = 6.0, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def curves_figure(
    timesteps: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    accumulated: Mapping[str, np.ndarray] | None = None,
    title: str = "Generation curves",
):
    """Curves over t, one line per entry (label -> (T,) values): rates on the left, accumulated rates on the right."""
    fig = _figure(9.0, 3.2)
    panels = [(curves, "rate  c_p(t)")] + ([(accumulated, "accumulated  C_p(t)")] if accumulated is not None else [])
    t = np.asarray(timesteps, dtype=np.float64)
    for j, (entries, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        for i, (label, c) in enumerate(entries.items()):
            ax.plot(t, np.asarray(c, dtype=np.float64), color=_MPL_COLORS[i % len(_MPL_COLORS)], marker=".",
                    label=label)
        ax.set_xlabel("timestep t  (generation runs right to left)")
        ax.set_ylabel(ylabel)
        if t.size:
            ax.set_xlim(t.max(), t.min())
        ax.grid(alpha=0.3)
        if entries:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def before_after_figure(timesteps: np.ndarray, before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], *,
                        reference: Mapping[str, np.ndarray] | None = None,
                        title: str = "Curves before (solid) and after (dashed) the edit"):
    """Region curves before (solid) and after (dashed) an edit, and reference curves (dotted, grey).

    ``before``/``after``/``reference``: label -> (T,) values on ``timesteps``.
    """
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    t = np.asarray(timesteps, dtype=np.float64)
    for i, (label, c) in enumerate(before.items()):
        ax.plot(t, np.asarray(c, dtype=np.float64), color=_MPL_COLORS[i % len(_MPL_COLORS)], marker=".",
                label=f"{label}, before")
    for i, (label, c) in enumerate(after.items()):
        ax.plot(t, np.asarray(c, dtype=np.float64), color=_MPL_COLORS[i % len(_MPL_COLORS)], ls="--", marker=".",
                label=f"{label}, after")
    for label, c in (reference or {}).items():
        ax.plot(t, np.asarray(c, dtype=np.float64), color="grey", ls=":", label=label)
    ax.set_xlabel("timestep t  (generation runs right to left)")
    ax.set_ylabel("rate  r_t")
    if t.size:
        ax.set_xlim(t.max(), t.min())
    ax.grid(alpha=0.3)
    if before or after or reference:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def history_figure(histories: Mapping[str, Sequence[float]], *, references: Mapping[str, float] | None = None,
                   title: str = "Energy over iterations", ylabel: str = "energy", log: bool = True):
    """One line per history (label -> values per iteration), dashed horizontal lines for ``references`` (label ->
    value), log y axis when all values are positive."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    values = []
    for i, (label, h) in enumerate(histories.items()):
        y = np.asarray(list(h), dtype=np.float64)
        values.append(y)
        ax.plot(np.arange(y.size), y, color=_MPL_COLORS[i % len(_MPL_COLORS)], marker=".", label=label)
    for j, (label, v) in enumerate((references or {}).items()):
        values.append(np.asarray([v], dtype=np.float64))
        ax.axhline(float(v), color=_MPL_COLORS[(len(histories) + j) % len(_MPL_COLORS)], ls="--", label=label)
    if log and values and all((v > 0).all() for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if values:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def figure_to_png(fig, path: str | os.PathLike) -> str:
    """Save a matplotlib figure as PNG; returns the path as a string."""
    fig.savefig(path, format="png")
    return os.fspath(path)


# --------------------------------------------------------------------------------------------------------------------
# Image layouts and files
# --------------------------------------------------------------------------------------------------------------------
def image_strip(rows: Mapping[str, Sequence[np.ndarray]], *, cell: int | None = None, gap: int = 2,
                label_width: int = 64) -> np.ndarray:
    """Rows of uint8 (h, w, 3) images, each row labelled on the left, on a white sheet.  -> uint8 (H, W, 3)

    Every image is resized to ``cell`` x ``cell`` pixels (default: the first image's larger side, at least 96).
    """
    items = [(k, list(v)) for k, v in rows.items() if len(v)]
    if not items:
        raise ValueError("image_strip needs at least one non-empty row")
    first = items[0][1][0]
    cell = int(cell or max(96, *first.shape[:2]))
    ncol = max(len(v) for _, v in items)
    H = len(items) * cell + (len(items) + 1) * gap
    W = label_width + ncol * cell + (ncol + 1) * gap
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, imgs) in enumerate(items):
        y0 = gap + r * (cell + gap)
        draw.text((4, y0 + cell // 2 - 6), label, fill=(0, 0, 0))
        for c, img in enumerate(imgs):
            tile = Image.fromarray(np.ascontiguousarray(img)).resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_width + gap + c * (cell + gap), y0))
    return np.asarray(sheet)


def side_by_side(images: Sequence[np.ndarray], *, gap: int = 4) -> np.ndarray:
    """uint8 (H, W_i, 3) images of equal height placed left to right with white gaps.  -> uint8 (H, sum W + gaps, 3)"""
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        pad = np.full((h - im.shape[0], im.shape[1], 3), 255, np.uint8)
        parts.append(np.concatenate([im, pad]) if pad.shape[0] else im)
    return np.concatenate(parts, axis=1)


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Write a uint8 (H, W, 3) image as a lossless PNG; returns the path."""
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    return os.fspath(path)


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, *, duration_ms: int = 120, bounce: bool = True,
             min_side: int = 128) -> str:
    """An animated, looping GIF of uint8 (H, W, 3) frames (played forth and back if ``bounce``); returns the path.

    Small frames are enlarged (nearest) so the shorter side is at least ``min_side`` pixels.
    """
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    seq = list(frames) + (list(frames[-2:0:-1]) if bounce else [])
    h, w = seq[0].shape[:2]
    scale = max(1, -(-min_side // min(h, w)))
    ims = [Image.fromarray(np.ascontiguousarray(f)).resize((w * scale, h * scale), Image.NEAREST) for f in seq]
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return os.fspath(path)


# --------------------------------------------------------------------------------------------------------------------
# 3D: manifolds and paths
# --------------------------------------------------------------------------------------------------------------------
def surface_figure(surface: tuple[np.ndarray, np.ndarray, np.ndarray], paths: Mapping[str, np.ndarray], *,
                   title: str = "", points: Mapping[str, np.ndarray] | None = None):
    """A 3D figure of a surface (X, Y, Z grids) with paths (label -> (N, 3) arrays) drawn on it.

    Plotly when installed (interactive rotation in the app), otherwise a matplotlib 3D figure. ``points``: labelled
    markers (label -> (3,)).
    """
    try:
        import plotly.graph_objects as go
    except ImportError:
        return _surface_figure_mpl(surface, paths, title=title, points=points)

    X, Y, Z = surface
    fig = go.Figure()
    fig.add_trace(go.Surface(x=X, y=Y, z=Z, opacity=0.35, showscale=False, colorscale="Greys", hoverinfo="skip",
                             name="manifold"))
    styles = {0: dict(width=7), 1: dict(width=4, dash="dash"), 2: dict(width=4, dash="dot")}
    for i, (label, p) in enumerate(paths.items()):
        p = np.asarray(p, dtype=np.float64)
        color = _MPL_COLORS[i % len(_MPL_COLORS)]
        fig.add_trace(go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="lines+markers", name=label,
                                   line=dict(color=color, **styles.get(i, dict(width=4))), marker=dict(size=2.5)))
    for label, q in (points or {}).items():
        q = np.asarray(q, dtype=np.float64).reshape(3)
        fig.add_trace(go.Scatter3d(x=[q[0]], y=[q[1]], z=[q[2]], mode="markers+text", text=[label], name=label,
                                   marker=dict(size=6, color="black"), showlegend=False))
    fig.update_layout(title=title, height=520, margin=dict(l=0, r=0, t=40, b=0),
                      scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"),
                      legend=dict(x=0, y=1), uirevision="keep")  # keep the camera while sliders move
    return fig


def _surface_figure_mpl(surface, paths, *, title="", points=None):
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    X, Y, Z = surface
    ax.plot_surface(X, Y, Z, alpha=0.2, color="grey", linewidth=0)
    for i, (label, p) in enumerate(paths.items()):
        p = np.asarray(p, dtype=np.float64)
        ax.plot(p[:, 0], p[:, 1], p[:, 2], color=_MPL_COLORS[i % len(_MPL_COLORS)], marker=".", label=label)
    for label, q in (points or {}).items():
        q = np.asarray(q, dtype=np.float64).reshape(3)
        ax.scatter([q[0]], [q[1]], [q[2]], color="black")
        ax.text(q[0], q[1], q[2], label)
    ax.set_box_aspect((np.ptp(X), np.ptp(Y), max(np.ptp(Z), 1e-3)))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def sphere_mesh(radius: float = 1.0, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grids (X, Y, Z) of a sphere of ``radius`` for plotting, each (n, n)."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n), np.linspace(0, np.pi, n))
    return radius * np.cos(u) * np.sin(v), radius * np.sin(u) * np.sin(v), radius * np.cos(v)


def torus_mesh(major: float = 1.0, minor: float = 0.4, n: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grids (X, Y, Z) of a torus (tube radius ``minor`` around a circle of radius ``major``), each (n, n)."""
    import torch

    from .synthetic import torus_point

    t, p = torch.meshgrid(torch.linspace(0, 2 * np.pi, n, dtype=torch.float64),
                          torch.linspace(0, 2 * np.pi, n, dtype=torch.float64), indexing="xy")
    xyz = torus_point(t, p, major, minor).numpy()  # (n, n, 3)
    return xyz[..., 0], xyz[..., 1], xyz[..., 2]
