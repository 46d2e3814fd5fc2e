"""One recipe, several seeds: `hf-pals train RECIPE --seeds 1,2,3`.

A single run's dev score moves with its seed (initial adapter and head weights, task schedule, batch
order, the carved validation split), so a difference between two recipes means little without the
spread. `run_seeds` trains the recipe once per seed, one after another, into OUTPUT_DIR/seed-<s>/ (each a
normal run with its own checkpoints, report and bundle; `resume=True` keeps the seeds already finished,
resumes an interrupted one from its last checkpoint and starts the rest), then writes
OUTPUT_DIR/seeds_summary.json: `summarize` of the runs' reports, plus each run's wall time.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from typing import Any, Iterable, Optional, Sequence

SUMMARY_NAME = "seeds_summary.json"
#: Report entries that are not evaluation sets (for a report without "main_metrics").
NOT_EVALUATION_SETS = frozenset(
    {"overall", "overall_formula", "main_metrics", "split", "timing", "trainable_parameters", "task_steps", "model_selection"}
)


def seed_dir(output_dir: str, seed: int) -> str:
    """Where the run of `seed` goes: OUTPUT_DIR/seed-<seed>."""
    return os.path.join(output_dir, f"seed-{seed}")


def parse_seeds(value: str) -> list[int]:
    """"1,2,3" -> [1, 2, 3]; a ValueError naming the bad item, an empty list or a repeated seed."""
    seeds = []
    for item in value.split(","):
        try:
            seeds.append(int(item.strip()))
        except ValueError:
            raise ValueError(f"--seeds takes comma-separated whole numbers such as 1,2,3; got {item.strip()!r} in {value!r}") from None
    return check_seeds(seeds)


def check_seeds(seeds: Iterable[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("--seeds: give at least one seed, e.g. --seeds 1,2,3")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds: seed(s) {repeated} are given twice")
    return seeds


def statistics_of(values: dict[str, float]) -> dict[str, Any]:
    """{"values": {seed: v}, "mean": ..., "sd": sample standard deviation (n - 1; None below two values), "n": ...}."""
    numbers = list(values.values())
    return {
        "values": dict(values),
        "mean": statistics.fmean(numbers) if numbers else None,
        "sd": statistics.stdev(numbers) if len(numbers) > 1 else None,
        "n": len(numbers),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _evaluation_sets(report: dict[str, Any]) -> list[str]:
    if isinstance(report.get("main_metrics"), dict):
        return list(report["main_metrics"])
    return [k for k, v in report.items() if k not in NOT_EVALUATION_SETS and isinstance(v, dict)]


def summarize(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The spread of several seeds' reports (`run.train`'s eval_results.json, keyed by seed).

    Returns `{"seeds": [...], "n": runs, "split": ..., "tasks": {set: {metric: stats}}, "overall": stats,
    "overall_formula": ..., "main_metrics": {set: metric}, "timing": {"train_seconds": stats, ...},
    "model_selection": {seed: {"best_step", "best_value"}}}` where each `stats` is `statistics_of` the seeds
    that report the value (`n` may then be below the number of runs). Seeds are strings, as in JSON.
    Pure: reads nothing but `reports`.
    """
    if not reports:
        raise ValueError("summarize: no reports")
    seeds = sorted(reports)
    sets: list[str] = []
    for seed in seeds:
        sets += [s for s in _evaluation_sets(reports[seed]) if s not in sets]
    tasks: dict[str, dict[str, Any]] = {}
    for set_name in sets:
        metrics: list[str] = []
        for seed in seeds:
            scores = reports[seed].get(set_name)
            if isinstance(scores, dict):
                metrics += [m for m, v in scores.items() if _is_number(v) and m not in metrics]
        tasks[set_name] = {
            metric: statistics_of(
                {str(s): float(reports[s][set_name][metric]) for s in seeds if _is_number(reports[s].get(set_name, {}).get(metric))}
            )
            for metric in metrics
        }
    summary: dict[str, Any] = {
        "seeds": [str(s) for s in seeds],
        "n": len(seeds),
        "split": _common(reports[s].get("split") for s in seeds),
        "tasks": tasks,
        "overall": statistics_of({str(s): float(reports[s]["overall"]) for s in seeds if _is_number(reports[s].get("overall"))}),
        "overall_formula": _common(reports[s].get("overall_formula") for s in seeds),
        "main_metrics": {k: v for s in seeds for k, v in (reports[s].get("main_metrics") or {}).items()},
    }
    timing_keys = sorted({k for s in seeds for k, v in (reports[s].get("timing") or {}).items() if _is_number(v)})
    summary["timing"] = {
        key: statistics_of({str(s): float(reports[s]["timing"][key]) for s in seeds if _is_number((reports[s].get("timing") or {}).get(key))})
        for key in timing_keys
    }
    selection = {
        str(s): {k: reports[s]["model_selection"].get(k) for k in ("metric", "best_step", "best_value", "split")}
        for s in seeds
        if isinstance(reports[s].get("model_selection"), dict)
    }
    if selection:
        summary["model_selection"] = selection
    return summary


def _common(values: Iterable[Any]) -> Any:
    """The one value all reports share, "mixed" when they differ, None when none has it."""
    distinct = {v for v in values if v is not None}
    return distinct.pop() if len(distinct) == 1 else ("mixed" if distinct else None)


def run_seeds(
    recipe_path: str, overrides: Optional[Sequence[str]], seeds: Sequence[int], resume: bool = False
) -> dict[str, Any]:
    """Train the recipe (with `overrides`, "a.b=value") once per seed into OUTPUT_DIR/seed-<s>/ and write
    OUTPUT_DIR/seeds_summary.json (`summarize` plus `wall_seconds` of each run and `runs`, each seed's dir).

    `training.seed` and `output_dir` are set per run; OUTPUT_DIR is the recipe's output_dir after
    `overrides`. With `resume`, a seed whose report exists is not trained again (its wall time comes from
    the previous summary), one with a checkpoint resumes from it, the others start fresh.
    """
    from transformers.trainer_utils import get_last_checkpoint

    from . import run
    from .recipe import load_recipe

    seeds = check_seeds(seeds)
    overrides = list(overrides or [])
    output_dir = load_recipe(recipe_path, overrides).output_dir  # checks the recipe before any run starts
    summary_path = os.path.join(output_dir, SUMMARY_NAME)
    previous_wall = {}
    if resume and os.path.isfile(summary_path):
        with open(summary_path) as f:
            previous_wall = json.load(f).get("wall_seconds", {})
    reports, wall = {}, {}
    for seed in seeds:
        directory = seed_dir(output_dir, seed)
        report_path = os.path.join(directory, run.REPORT_NAME)
        if resume and os.path.isfile(report_path):
            with open(report_path) as f:
                reports[seed] = json.load(f)
            wall[str(seed)] = previous_wall.get(str(seed))
            continue
        recipe = load_recipe(recipe_path, [*overrides, f"training.seed={seed}", f"output_dir={json.dumps(directory)}"])
        checkpoint = resume and os.path.isdir(directory) and get_last_checkpoint(directory)
        started = time.perf_counter()
        reports[seed] = run.train(recipe, resume=True if checkpoint else None)
        wall[str(seed)] = round(time.perf_counter() - started, 1)
    summary = summarize(reports)
    summary["wall_seconds"] = wall
    known = [w for w in wall.values() if w is not None]
    summary["total_wall_seconds"] = round(math.fsum(known), 1) if len(known) == len(wall) else None
    summary["runs"] = {str(s): seed_dir(output_dir, s) for s in seeds}
    if int(os.environ.get("RANK", "0")) == 0:  # one writer under `accelerate launch` / torchrun
        os.makedirs(output_dir, exist_ok=True)
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2)
    return summary
