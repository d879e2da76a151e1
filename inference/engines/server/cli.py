"""The command line: ``python -m inference.engines.server --model PATH|demo ...``."""

from __future__ import annotations

import argparse
import logging

from inference.engines.base import Generator
from inference.engines.server.app import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inference.engines.server",
        description="Serve a local model over an OpenAI-compatible API (transformers engine).",
    )
    parser.add_argument("--model", required=True, help="HF model folder, or 'demo'")
    parser.add_argument("--adapter", help="LoRA adapter folder to apply")
    parser.add_argument("--name", help="model name clients ask for (default: folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--allow-lora-loading",
        action="store_true",
        help="enable /v1/load_lora_adapter (adapters over this base model)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    from pathlib import Path

    from inference.engines.transformers_engine import TransformersGenerator

    model_path = args.model
    if model_path == "demo":
        from inference.engines.demo_model import DEMO_MODEL_NAME, ensure_demo_model

        model_path = str(ensure_demo_model())
        name = args.name or DEMO_MODEL_NAME
    else:
        name = args.name or Path(model_path).name
    settings = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    generator = TransformersGenerator(model_path, adapter_path=args.adapter, **settings)
    loader = None
    if args.allow_lora_loading:

        def loader(path: str) -> Generator:
            return TransformersGenerator(model_path, adapter_path=path, **settings)

    serve(generator, args.host, args.port, model_name=name, adapter_loader=loader)
