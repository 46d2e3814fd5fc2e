"""The `hf-pals` command: `train` a recipe, `evaluate` a saved model.

    hf-pals train RECIPE.yaml [--data-dir D] [--output-dir O] [--max-steps N] [--seed S | --seeds 1,2,3] [--resume] [--init-from M] [--set k=v ...]
    hf-pals pretrain RECIPE.yaml [--data-dir D] [--output-dir O] [--resume] [--set k=v ...]
    hf-pals evaluate MODEL_DIR [MODEL_DIR ...] [--data-dir D] [--recipe R.yaml] --split dev|train|test [--output report.json] [--max-examples N] [--predict-both-orders quora] [--bf16]
    hf-pals push MODEL_DIR REPO_ID [--private] [--token T] [--revision BRANCH] [--dataset TASK=DATASET_ID ...]
    hf-pals plot RUN_DIR [--output-dir D]
    hf-pals soup MODEL_DIR [MODEL_DIR ...] --output-dir OUT
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
        "--seeds",
        metavar="S1,S2,...",
        help="one run per seed in OUTPUT_DIR/seed-<s>/, then OUTPUT_DIR/seeds_summary.json (mean, sd)",
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="resume from the last checkpoint in the output dir, or from the given checkpoint dir",
    )
    train.add_argument(
        "--init-from", metavar="MODEL_DIR", help="grow this trained bundle by the recipe's new tasks (overrides init_from)"
    )
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")

    pretrain = sub.add_parser(
        "pretrain", help="further masked-LM pretraining of the base on the tasks' train text (Sun et al., 2019)"
    )
    pretrain.add_argument("recipe", help="pretraining recipe YAML file (recipes/pretraining/cs224n_mlm.yaml)")
    pretrain.add_argument("--data-dir", help="directory of the CS224N files (overrides data.dir)")
    pretrain.add_argument("--output-dir", help="where the pretrained encoder goes (overrides output_dir)")
    pretrain.add_argument("--resume", nargs="?", const=True, default=None, help="resume from the last (or given) checkpoint")
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")

    evaluate = sub.add_parser("evaluate", help="score a saved model on a split (or predict the test split)")
    evaluate.add_argument(
        "model_dir", nargs="+", help="a saved model; several are scored as one ensemble (probabilities averaged)"
    )
    evaluate.add_argument("--data-dir", help="the CS224N files' directory (overrides the recipe's data.dir)")
    evaluate.add_argument("--recipe", help="the recipe that says where each task's data is (default: CS224N files)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    evaluate.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    evaluate.add_argument("--output", help="report JSON (dev/train) or predictions directory (test)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--max-examples", type=int, help="score only the first N rows of each file")
    evaluate.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of failing")
    evaluate.add_argument(
        "--predict-both-orders", default="", metavar="TASK[,TASK]",
        help="pair tasks to predict in both sentence orders, outputs averaged (TaskSpec.predict_both_orders)",
    )
    evaluate.add_argument(
        "--bf16", action="store_true",
        help="forward passes under autocast to bfloat16 (as `train` scores dev with training.bf16)",
    )

    push = sub.add_parser("push", help="upload a saved model (safetensors, tokenizer, report) with a model card to the Hub")
    push.add_argument("model_dir")
    push.add_argument("repo_id", help="Hub model repo, e.g. user/minilm-pals-cs224n (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--token", help="Hub token (default: the saved login or HF_TOKEN)")
    push.add_argument("--revision", help="branch to push to (created if missing)")
    push.add_argument("--commit-message")
    push.add_argument(
        "--dataset", action="append", default=[], metavar="TASK=DATASET_ID", help="Hub dataset of a task, for the card"
    )

    plot = sub.add_parser("plot", help="draw a run's per-task losses, dev metrics and task sampling as PNGs")
    plot.add_argument(
        "run_dir", help="a training output dir (its newest trainer_state.json is read), or a --seeds dir (its summary)"
    )
    plot.add_argument("--output-dir", help="where the PNGs go (default RUN_DIR/plots)")

    soup = sub.add_parser("soup", help="average several bundles of the same recipe into one (a uniform model soup)")
    soup.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="bundles with the same base, tasks and adapters")
    soup.add_argument("--output-dir", required=True, help="the new bundle (must not exist yet, or be empty)")

    bench = sub.add_parser(
        "bench",
        help="print benchmark figures as JSON (adapters: step time and memory; trainer; tasks: cost by task count; "
        "serving: predictor throughput; processes: 2 CPU processes (DDP) against 1; pal-bound: PAL steps with "
        "TS(h) cut down to its products, the floor under any fused kernel)",
    )
    bench.add_argument("which", choices=["adapters", "trainer", "tasks", "serving", "processes", "pal-bound"])
    bench.add_argument("--data-dir", required=True)
    bench.add_argument("--base-model", default="sentence-transformers/all-MiniLM-L6-v2")
    bench.add_argument(
        "--steps", type=int, help="trainer: steps of the timed run (default 40); processes: timed rounds (default 10)"
    )
    bench.add_argument(
        "--batch-size", type=int, help="adapters, pal-bound, tasks: rows of the timed batch (default 32); processes: rows per process (16)"
    )
    bench.add_argument(
        "--max-length", type=int, default=64, help="adapters, pal-bound, tasks, processes: tokens per row (padded to it)"
    )
    bench.add_argument("--repeats", type=int, help="adapters, pal-bound (default 20), tasks (default 5): interleaved timed rounds")
    bench.add_argument(
        "--architecture",
        choices=["bert-base"],
        help="adapters, pal-bound: time an encoder of this shape with random weights and --base-model's tokenizer",
    )
    bench.add_argument("--tasks", default="1,3,8,16", metavar="N1,N2,...", help="tasks: the task counts N")
    bench.add_argument(
        "--shapes",
        metavar="S1,S2",
        help="tasks: encoder shapes (minilm, bert-base, tiny; default minilm,bert-base); processes: one shape (minilm)",
    )
    bench.add_argument(
        "--separate-models",
        choices=["auto", "measured", "estimated"],
        default="auto",
        help="tasks: N distinct separate models (measured), or one copy counted N times (estimated); auto: "
        "measured when N copies fit in 60%% of the available memory",
    )
    bench.add_argument("--no-memory", action="store_true", help="tasks: skip the child-process memory figures")
    bench.add_argument("--batch-sizes", default="1,32,256", metavar="B1,B2,...", help="serving: texts per batch")
    bench.add_argument("--model-dir", help="serving: an existing bundle to serve (default: one built from --base-model)")
    bench.add_argument("--min-batches", type=int, default=20, help="serving: timed batches per size, at least")
    bench.add_argument("--min-texts", type=int, default=256, help="serving: timed texts per size, at least")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .allocator import keep_freed_memory

    keep_freed_memory()  # before any model is loaded: CPU steps then reuse freed memory (see hf_pals/allocator.py)
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
            if args.init_from:
                overrides.append(f"init_from={json.dumps(args.init_from)}")
            if args.seeds is not None:  # hf_pals.seeds: the recipe once per seed, then the spread
                from .seeds import parse_seeds, run_seeds

                if args.seed is not None:
                    raise ValueError("give --seed or --seeds, not both")
                if args.resume not in (None, True):
                    raise ValueError("--seeds resumes each seed's run from its own last checkpoint: give --resume alone")
                result = run_seeds(args.recipe, overrides, parse_seeds(args.seeds), resume=bool(args.resume))
            else:
                recipe = load_recipe(args.recipe, overrides)
                result = run.train(recipe, resume=args.resume)
        elif args.command == "pretrain":
            from .pretraining import load_pretrain_recipe, pretrain

            overrides = list(args.set)
            if args.data_dir:
                overrides.append(f"data.dir={json.dumps(args.data_dir)}")
            if args.output_dir:
                overrides.append(f"output_dir={json.dumps(args.output_dir)}")
            result = pretrain(load_pretrain_recipe(args.recipe, overrides), resume=args.resume)
        elif args.command == "push":
            from .hub import push_to_hub

            bad = [d for d in args.dataset if "=" not in d]
            if bad:
                raise ValueError(f"--dataset takes TASK=DATASET_ID, got {bad[0]!r}")
            info = push_to_hub(
                args.model_dir,
                args.repo_id,
                private=args.private or None,
                token=args.token,
                revision=args.revision,
                commit_message=args.commit_message,
                datasets=dict(d.split("=", 1) for d in args.dataset),
            )
            result = {"repo_id": args.repo_id, "revision": args.revision, "commit_url": getattr(info, "commit_url", None)}
        elif args.command == "plot":
            from .plots import plot_run

            result = plot_run(args.run_dir, args.output_dir)
        elif args.command == "soup":
            from .soup import uniform_soup

            result = uniform_soup(args.model_dirs, args.output_dir)
        elif args.command == "bench":
            from .benchmarks import adapters, trainer

            if args.which in ("adapters", "pal-bound"):
                from .benchmarks import pal_bound

                result = (adapters if args.which == "adapters" else pal_bound).run(
                    args.data_dir,
                    args.base_model,
                    batch_size=32 if args.batch_size is None else args.batch_size,
                    max_length=args.max_length,
                    repeats=20 if args.repeats is None else args.repeats,
                    architecture=args.architecture,
                )
            elif args.which == "tasks":
                from .benchmarks import tasks as task_bench
                from .benchmarks.common import parse_list

                result = task_bench.run(
                    args.data_dir,
                    args.base_model,
                    tasks=parse_list(args.tasks, "--tasks", int),
                    shapes=parse_list("minilm,bert-base" if args.shapes is None else args.shapes, "--shapes"),
                    batch_size=32 if args.batch_size is None else args.batch_size,
                    max_length=args.max_length,
                    repeats=5 if args.repeats is None else args.repeats,
                    separate=args.separate_models,
                    memory=not args.no_memory,
                )
            elif args.which == "serving":
                from .benchmarks import serving
                from .benchmarks.common import parse_list

                result = serving.run(
                    args.data_dir,
                    args.base_model,
                    model_dir=args.model_dir,
                    batch_sizes=parse_list(args.batch_sizes, "--batch-sizes", int),
                    min_batches=args.min_batches,
                    min_texts=args.min_texts,
                )
            elif args.which == "processes":
                from .benchmarks import processes
                from .benchmarks.common import parse_list

                shapes = parse_list("minilm" if args.shapes is None else args.shapes, "--shapes")
                if len(shapes) != 1:
                    raise ValueError(f"bench processes takes one shape in --shapes, got {args.shapes!r}")
                result = processes.run(
                    args.data_dir,
                    args.base_model,
                    shape=shapes[0],
                    batch_size=16 if args.batch_size is None else args.batch_size,
                    max_length=args.max_length,
                    steps=10 if args.steps is None else args.steps,
                )
            else:
                result = trainer.run(args.data_dir, steps=40 if args.steps is None else args.steps)
        else:
            eval_recipe = load_recipe(args.recipe, list(args.set)) if args.recipe else None
            result = run.evaluate(
                args.model_dir,
                args.data_dir,
                recipe=eval_recipe,
                split=args.split,
                output=args.output,
                on_bad_rows="skip" if args.skip_bad_rows else "raise",
                batch_size=args.batch_size,
                max_examples=args.max_examples,
                predict_both_orders=[t for t in args.predict_both_orders.split(",") if t],
                bf16=args.bf16,
            )
    except (RecipeError, FileNotFoundError, ValueError, OSError) as err:
        print(f"hf-pals: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
