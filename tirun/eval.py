"""Re-score a finished run: apply its application again to the words it saved.

    python -m tirun.eval RUN_DIR [application=NAME] [KEY=VALUE ...]

Reads `RUN_DIR/config.yaml`, takes the run's application (or the one named), applies it to
`RUN_DIR/learned_embeds.safetensors` (or the run's `embeddings`), and rewrites
`RUN_DIR/metrics.json` with `applications.<name>.*`. Overrides (Hydra's syntax) set keys of the
run's config, e.g. `application.sampling.samples=64 application.score.clip=/models/clip-vit-b32`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from tirun import applications, config

_MISSING = object()


def load_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved config with `application=NAME` swapped in and dotted overrides merged.

    Args:
        run_dir: a folder written by `python -m tirun` (it holds `config.yaml`).
        overrides: `application=NAME` and `key=value` strings.
    """
    file = run_dir / "config.yaml"
    if not file.is_file():
        raise ValueError(f"{run_dir} has no config.yaml: give the folder of a finished run")
    cfg = OmegaConf.load(file)
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("application=")]
    rest = [o for o in overrides if not o.startswith("application=")]
    if names:
        cfg.application = config.compose([f"application={names[-1]}"]).application
    if cfg.get("application") is None:
        raise ValueError(
            f"the run in {run_dir} had no application: add application=NAME (e.g. variation)"
        )
    OmegaConf.set_struct(cfg, True)
    try:
        parsed = OverridesParser.create().parse_overrides(list(rest))
    except OverrideParseException as error:
        raise ValueError(str(error).splitlines()[0]) from None
    for override, text in zip(parsed, rest, strict=True):
        if OmegaConf.select(cfg, override.key_or_group, default=_MISSING) is _MISSING:
            raise ValueError(f"override {text!r} names no key of the run's config")
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


def rescore(run_dir: str | Path, overrides: Sequence[str] = ()) -> dict:
    """Apply the run's application again and rewrite its metrics; returns them.

    Args:
        run_dir: a folder written by `python -m tirun`.
        overrides: `application=NAME` and dotted `key=value` strings.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir, overrides)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return applications.run(cfg, run_dir, metrics, {})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tirun.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="application=NAME, KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        metrics = rescore(args.run_dir, args.overrides)
    except ValueError as error:
        if os.environ.get("TIRUN_DEBUG"):
            raise
        print(f"tirun.eval: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(metrics.get("applications", {}), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
