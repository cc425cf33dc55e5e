"""`rewrite-studio` / `python -m rewrite.studio`: the rewriting studio, a local web page (127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rewrite-studio", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the studio "
                         "to your network)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default="outputs/studio", help="the studio's folder: runs, edit files, history, masks")
    ap.add_argument("--config-dir", default=None, help="a folder of your own configs (generator/, edit/, …), as "
                                                         "python -m rewrite --config-dir")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. stats.num_samples=200")
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        ap.error(f"--port must be in 1..65535, got {args.port}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    from rewrite.studio.app import serve
    from rewrite.studio.backend import Studio

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        studio = Studio(args.out, args.config_dir, args.overrides)
    except (OSError, ValueError) as e:
        sys.exit(f"rewrite-studio: error: {e}")
    serve(studio, args.host, args.port)


if __name__ == "__main__":
    main()
