"""``python -m pipeline train``: train (or resume) the scene DDPM; see :mod:`pipeline.train`."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..train import DATASETS, PRESETS

    p = sub.add_parser(
        "train", help="train a DDPM on procedural scenes (the embedded default model)",
        description="Train a DDPM UNet2DModel on training-split scenes. Flags left unset keep the preset's value. "
        "Writes OUT/checkpoint.pt, OUT/pipeline/ (EMA weights, diffusers format), OUT/train.log.",
    )
    p.add_argument("--out", required=True, help="output folder (checkpoint, exported pipeline, logs, data cache)")
    p.add_argument("--preset", default="cpu32", choices=sorted(PRESETS), help="base recipe (default: cpu32)")
    p.add_argument("--size", type=int, help="image side in pixels")
    p.add_argument("--steps", type=int, help="total optimisation steps (0: no step limit)")
    p.add_argument("--minutes", type=float, help="training time budget of this invocation (0: no time limit)")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--lr", type=float, help="AdamW peak learning rate")
    p.add_argument("--lr-decay", choices=("none", "cosine"), help="learning-rate decay over this invocation")
    p.add_argument("--dataset", choices=DATASETS, help="training data: scenes (smooth family), textured, mixed "
                   "(both families), digits (rotated sklearn digits)")
    p.add_argument("--init-from", help="fresh starts: initialise the U-Net from this model (default, a pipeline "
                   "folder) of the same architecture (fine-tuning)")
    p.add_argument("--pool-size", type=int, help="number of training scenes rendered once and cached")
    p.add_argument("--seed", type=int, help="seed of model init and data order")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--checkpoint-every", type=float, dest="checkpoint_minutes",
                   help="minutes between checkpoints + pipeline exports")
    p.add_argument("--log-every", type=int, help="steps between loss lines in train.log")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                   help="continue from OUT/checkpoint.pt when present (default: yes)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..train import PRESETS, config_with, train

    cfg = config_with(
        PRESETS[args.preset], out_dir=args.out, size=args.size, batch_size=args.batch_size, lr=args.lr,
        lr_decay=args.lr_decay, dataset=args.dataset, pool_size=args.pool_size, seed=args.seed,
        device=args.device, threads=args.threads,
        checkpoint_minutes=args.checkpoint_minutes, log_every=args.log_every, resume=args.resume,
        init_from=args.init_from,
    )
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps or None)
    if args.minutes is not None:
        cfg = replace(cfg, minutes=args.minutes or None)
    result = train(cfg)
    print(f"{result.steps} steps ({result.steps_this_run} this run, {result.seconds_per_step:.3f} s/step); "
          f"EMA pipeline: {result.pipeline_dir}")
    return 0
