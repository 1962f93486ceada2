"""Gradio app: look inside a diffusion model through its geometry.

Tabs: generation curves and saliency (``/rates``), curve-matching edits (``/remove``, ``/transfer``, ``/saliency``,
``/blend``), score-metric geodesics between images (``/geodesic``) and a geometry lab on closed-form manifolds
(``/lab``). The page is built by :func:`ui.build_demo` (one module per tab in ``ui/``); the computing happens in
``pipeline/`` and ``accel/``. This file only parses the command line, starts the optional warm-up and launches.

Run::

    python app.py [--host H] [--port P] [--share] [--model SRC] [--hosted] [--warmup] [--device D] [--dtype T]
                  [--concurrency N] [--threads N] [--time-limit S]

Serves on 127.0.0.1:7860 by default (``GRADIO_SERVER_PORT`` / ``GRADIO_SERVER_NAME`` are honoured). Models load
lazily, on the first request that needs one, through a cache keyed by (source, device). Hosted mode (``--hosted`` or
``DIFFGEO_HOSTED=1``) offers only allow-listed models (``default``, the ``--model`` one, and the hub ids in
``DIFFGEO_ALLOWED_MODELS``), shows no local paths, keeps error messages free of server details, and limits what one
request may ask for (``ui.config.HOSTED_LIMITS``: backends auto and torch, shorter sliders, a per-request time limit;
the page shows them). See ``docs/security.md`` for what hosted mode guarantees and what it does not.

A request whose client cancels or disconnects stops at the library's next cancel check (``ui.models``), and no more
than ``--concurrency`` model jobs compute at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from ui import AppConfig, ModelManager, build_demo, cache_paths
from ui.config import DTYPES
from ui.layout import PAGE_CSS

__all__ = ["AppConfig", "ModelManager", "build_demo", "main", "parse_args", "warm_up"]

log = logging.getLogger("diffgeo.app")


def warm_up(models: ModelManager, source: str) -> None:
    """Load ``source`` and build its ``auto`` backend with every graph it uses (first start of a hosted Space).

    Runs in a background thread while the page already serves. While it exports, requests for the same backend wait
    for it (instead of exporting the same graphs a second time); requests for other backends (torch) run.
    Failures are logged: the app still serves, and backends then build on first use.
    """
    try:
        label = models.prepare(source, "auto")
        log.info("warm-up done: %s backend ready for %s", label, "the selected model")
    except Exception:
        log.exception("warm-up failed; backends will be built on first use")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT`` give the defaults of --host and --port."""
    p = argparse.ArgumentParser(description="diffgeo Gradio app")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to bind (default 127.0.0.1; use 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--model", default=None, help="model selected at start: default, a local folder, or a hub id")
    p.add_argument("--hosted", action="store_true", default=None,
                   help="hosted demo: allow-listed models only, no local paths (also DIFFGEO_HOSTED=1)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="model dtype (default float32; bfloat16 on a CPU, float16 or bfloat16 on a GPU; also "
                        "DIFFGEO_DTYPE)")
    p.add_argument("--concurrency", type=int, default=None, help="model jobs running at once (default 1)")
    p.add_argument("--warmup", action="store_true",
                   help="after the page is up, load the selected model and prepare the auto backend (exports ONNX "
                        "graphs / TensorRT engines into the artifact cache) in a background thread")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 avoids thrashing on a shared CPU)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="stop a model request after S seconds (default: 300 in hosted mode, none otherwise; 0: none; "
                        "also DIFFGEO_TIME_LIMIT)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, build the page, start the warm-up if asked, and serve."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = AppConfig.from_env(model=args.model, hosted=args.hosted, device=args.device, dtype=args.dtype,
                             concurrency=args.concurrency,
                             time_limit_s=args.time_limit)
    models = ModelManager(cfg)
    demo = build_demo(cfg, models)
    if args.warmup:
        threading.Thread(target=warm_up, args=(models, cfg.model), name="diffgeo-warmup", daemon=True).start()
    # cache_paths: gradio's cache folder reaches the browser as a relative alias, never as a server path.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=cfg.max_file_size,
                show_error=False, ssr_mode=False, footer_links=["api"], css=PAGE_CSS,
                app_kwargs={"middleware": [cache_paths.middleware()]})


if __name__ == "__main__":
    main()
