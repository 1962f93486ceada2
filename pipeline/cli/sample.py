"""``python -m pipeline sample``: draw DDIM samples from a model and save them as a PNG grid."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw DDIM samples and save an image grid",
                       description="Draw N samples with deterministic DDIM from seeded noise; save an 8-column grid.")
    p.add_argument("--model", default="default", help="model source: 'default', a local folder or a hub id")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--cell", type=int, default=64, help="pixels per grid cell (nearest upscaling)")
    p.add_argument("--out", default="samples.png", help="output PNG path")
    p.add_argument("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..ddim import generate
    from ..errors import InputError
    from ..model import load_model
    from ..viz import image_strip, save_png

    if args.n < 1 or args.steps < 1 or args.cell < 1:
        raise InputError(f"--n, --steps and --cell must be >= 1, got {args.n}, {args.steps}, {args.cell}")
    model = load_model(args.model, device=args.device)
    x0 = generate(model, args.n, num_steps=args.steps, seed=args.seed,
                  progress=lambda k, n, desc: print(f"\r{desc} {k}/{n}", end="", flush=True))
    print()
    images = ((model.decode(x0) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
    rows = {str(r + 1): list(images[i : i + 8]) for r, i in enumerate(range(0, len(images), 8))}
    save_png(image_strip(rows, cell=args.cell, label_width=20), args.out)
    print(f"{args.n} samples ({args.steps} DDIM steps, seed {args.seed}) -> {args.out}")
    return 0
