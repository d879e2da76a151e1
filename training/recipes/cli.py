"""``python -m training.recipes.<method> --config run.yaml [--set key=value ...]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from .config import ConfigError, RecipeConfig
from .data import SnapshotError
from .modeling import ModelLoadError


def main(config_cls: type[RecipeConfig], run: Callable[[Any], dict], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m training.recipes.{config_cls.METHOD}",
        description=f"Train with the {config_cls.METHOD} recipe (also under `accelerate launch`).",
    )
    parser.add_argument("--config", required=False, help="YAML file with the recipe's fields")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one field (YAML value)"
    )
    parser.add_argument("--fields", action="store_true", help="list every config field with its help")
    args = parser.parse_args(argv)
    if args.fields:
        for name, text in config_cls.field_help().items():
            print(f"{name}:\n    {text}")
        return 0
    if not args.config:
        parser.error("--config is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_cls.from_yaml(args.config, args.set)
        result = run(cfg)
    except (ConfigError, SnapshotError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result:
        print(json.dumps(result))
    return 0
