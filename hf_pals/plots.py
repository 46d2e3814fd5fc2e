"""Training curves of a run as PNG files (`hf-pals plot RUN_DIR`), from its `trainer_state.json`.

Three figures, each written only when the run logged what it shows:

- `loss.png`: the training loss of each task (`loss_<task>`, the mean over the logging window) and of
  all tasks together (`loss`), against the optimizer step;
- `eval.png`: the metrics of the periodic evaluations (`eval_<task>_<metric>`, `eval_overall`) on the
  split that selects (the carved validation split, else dev);
- `sampling.png`: the task-sampling probabilities p_i of each epoch, as `MultiTaskTrainer` logs them at
  the first step of every epoch (`sampling_epoch`, `sampling_p_<task>`).

A directory of several seeds' runs (`hf-pals train --seeds`, with `seeds_summary.json`) gets `seeds.png`
instead: a bar per task metric and overall at the seeds' mean, with ±1 sample standard deviation error
bars and a dot per seed (each run's own curves: `hf-pals plot RUN_DIR/seed-<s>`).

Needs matplotlib (`pip install "hf_pals[plot]"`); figures are drawn with the Agg backend, so no display
is needed and pyplot's global state is left alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Union

from .seeds import SUMMARY_NAME as SEEDS_SUMMARY_NAME

#: Logged eval values that are timings, not metrics.
_EVAL_TIMINGS = re.compile(r"eval_(runtime|samples_per_second|steps_per_second)$")


def find_trainer_state(run_dir: Union[str, Path]) -> Path:
    """The newest trainer state of a run: RUN_DIR/trainer_state.json or RUN_DIR/checkpoint-N/trainer_state.json
    with the largest global step (RUN_DIR may also be a checkpoint directory)."""
    run_dir = Path(run_dir)
    candidates = [run_dir / "trainer_state.json", *run_dir.glob("checkpoint-*/trainer_state.json")]
    found = [path for path in candidates if path.is_file()]
    if not found:
        raise FileNotFoundError(f"no trainer_state.json in {run_dir} or its checkpoint-*/ directories")
    return max(found, key=lambda path: json.loads(path.read_text()).get("global_step", 0))


def _new_figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _line_figure(path: Path, history: list[dict], keys: dict[str, str], title: str, ylabel: str) -> None:
    """One line per logged key (label -> key), against the step."""
    figure, axes = _new_figure(title, "optimizer step", ylabel)
    for label, key in keys.items():
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if not points:
            continue
        style = {"color": "black", "linestyle": "--"} if label == "all tasks" else {}
        axes.plot(*zip(*points), marker="o", markersize=3, label=label, **style)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path)


def _sampling_figure(path: Path, history: list[dict], run_name: str) -> None:
    """Stacked bars: the p_i of each task in each sampling epoch (a resumed run's repeat counts once)."""
    epochs = {entry["sampling_epoch"]: entry for entry in history if "sampling_epoch" in entry}
    prefix = "sampling_p_"
    tasks = sorted({key[len(prefix) :] for entry in epochs.values() for key in entry if key.startswith(prefix)})
    figure, axes = _new_figure(f"{run_name}: task sampling probabilities", "epoch", "p (share of steps)")
    numbers = sorted(epochs)
    bottom = [0.0] * len(numbers)
    for task in tasks:
        heights = [epochs[e].get(f"sampling_p_{task}", 0.0) for e in numbers]
        axes.bar(numbers, heights, bottom=bottom, label=task)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.set(xticks=numbers, ylim=(0, 1.05))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path)


def _seeds_figure(path: Path, summary: dict, run_name: str) -> None:
    """Bars at each task metric's (and overall's) mean over the seeds, ±1 sd, with each seed's value as a dot."""
    bars = [(f"{task}\n{metric}", stats) for task, metrics in summary.get("tasks", {}).items() for metric, stats in metrics.items()]
    if summary.get("overall", {}).get("n"):
        bars.append(("overall", summary["overall"]))
    seeds = ", ".join(summary.get("seeds", []))
    figure, axes = _new_figure(f"{run_name}: {summary.get('split') or 'dev'} scores over seeds {seeds}", "", "score")
    figure.set_size_inches(max(7, 1.1 * len(bars) + 2), 4.5)
    positions = range(len(bars))
    means = [stats["mean"] for _, stats in bars]
    errors = [stats["sd"] or 0.0 for _, stats in bars]
    axes.bar(positions, means, yerr=errors, capsize=6, color="tab:blue", alpha=0.6, label="mean ± sd")
    for position, (_, stats) in zip(positions, bars):
        values = list(stats["values"].values())
        axes.plot([position + 0.2] * len(values), values, "o", color="black", markersize=4)
    axes.plot([], [], "o", color="black", markersize=4, label="one seed")
    axes.set_xticks(list(positions), [label for label, _ in bars])
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path)


def plot_run(run_dir: Union[str, Path], output_dir: Optional[Union[str, Path]] = None) -> dict:
    """Writes the PNGs of a run to `output_dir` (default RUN_DIR/plots).

    Returns {"trainer_state": path read, "plots": {"loss" | "eval" | "sampling": PNG path}}; for a
    directory with `seeds_summary.json`, {"seeds_summary": path read, "plots": {"seeds": PNG path}}.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError('hf-pals plot needs matplotlib: pip install "hf_pals[plot]"') from err
    run_dir = Path(run_dir)
    summary_path = run_dir / SEEDS_SUMMARY_NAME
    if summary_path.is_file():
        output_dir = Path(output_dir) if output_dir is not None else run_dir / "plots"
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "seeds.png"
        _seeds_figure(path, json.loads(summary_path.read_text()), run_dir.resolve().name)
        return {"seeds_summary": str(summary_path), "plots": {"seeds": str(path)}}
    state_path = find_trainer_state(run_dir)
    history = json.loads(state_path.read_text()).get("log_history", [])
    output_dir = Path(output_dir) if output_dir is not None else run_dir / "plots"
    output_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({key for entry in history for key in entry})
    name = run_dir.resolve().name
    plots = {}

    task_losses = {key[len("loss_") :]: key for key in keys if key.startswith("loss_")}
    if task_losses:
        plots["loss"] = output_dir / "loss.png"
        _line_figure(plots["loss"], history, {**task_losses, "all tasks": "loss"}, f"{name}: training loss", "loss")
    metrics = {key[len("eval_") :]: key for key in keys if key.startswith("eval_") and not _EVAL_TIMINGS.match(key)}
    if metrics:
        plots["eval"] = output_dir / "eval.png"
        _line_figure(plots["eval"], history, metrics, f"{name}: periodic evaluation metrics", "score")
    if "sampling_epoch" in keys:
        plots["sampling"] = output_dir / "sampling.png"
        _sampling_figure(plots["sampling"], history, name)
    return {"trainer_state": str(state_path), "plots": {kind: str(path) for kind, path in plots.items()}}
