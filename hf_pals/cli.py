"""The `hf-pals` command: `train` a recipe, `evaluate` a saved model.

    hf-pals train RECIPE.yaml [--data-dir D] [--output-dir O] [--max-steps N] [--seed S] [--resume] [--set k=v ...]
    hf-pals evaluate MODEL_DIR --data-dir D --split dev [--output report.json] [--max-examples N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-pals", description="Multi-task BERT with Projected Attention Layers")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a recipe; the output dir then holds the model bundle")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("--data-dir", help="directory of the CS224N files (overrides data.dir)")
    train.add_argument("--output-dir", help="where the bundle, checkpoints and report go (overrides output_dir)")
    train.add_argument("--max-steps", type=int, help="overrides training.max_steps")
    train.add_argument("--seed", type=int, help="overrides training.seed")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="resume from the last checkpoint in the output dir, or from the given checkpoint dir",
    )
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")

    evaluate = sub.add_parser("evaluate", help="score a saved model on a CS224N split (or predict the test split)")
    evaluate.add_argument("model_dir")
    evaluate.add_argument("--data-dir", required=True)
    evaluate.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    evaluate.add_argument("--output", help="report JSON (dev/train) or predictions directory (test)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--max-examples", type=int, help="score only the first N rows of each file")
    evaluate.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of failing")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from . import run
    from .recipe import RecipeError, load_recipe

    try:
        if args.command == "train":
            overrides = list(args.set)
            if args.data_dir:
                overrides.append(f"data.dir={json.dumps(args.data_dir)}")
            if args.output_dir:
                overrides.append(f"output_dir={json.dumps(args.output_dir)}")
            if args.max_steps is not None:
                overrides.append(f"training.max_steps={args.max_steps}")
            if args.seed is not None:
                overrides.append(f"training.seed={args.seed}")
            recipe = load_recipe(args.recipe, overrides)
            result = run.train(recipe, resume=args.resume)
        else:
            result = run.evaluate(
                args.model_dir,
                args.data_dir,
                split=args.split,
                output=args.output,
                on_bad_rows="skip" if args.skip_bad_rows else "raise",
                batch_size=args.batch_size,
                max_examples=args.max_examples,
            )
    except (RecipeError, FileNotFoundError, ValueError, OSError) as err:
        print(f"hf-pals: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
