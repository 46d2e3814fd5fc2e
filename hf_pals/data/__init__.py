"""Data loading for hf_pals: tasks from `datasets` (`sources.py`: Hub ids, local files, `save_to_disk`
folders) and the CS224N handout's files (`cs224n.py`), one `datasets.Dataset` per task and split; then
task sampling and collation."""

from .cs224n import (
    CS224N_FILES,
    CS224N_SPLITS,
    LABEL_RANGES,
    PREDICTION_HEADERS,
    TASK_KINDS,
    BadRowError,
    cs224n_path,
    load_cs224n,
    load_cs224n_file,
    write_cs224n_predictions,
)

__all__ = [
    "CS224N_FILES",
    "CS224N_SPLITS",
    "LABEL_RANGES",
    "PREDICTION_HEADERS",
    "TASK_KINDS",
    "BadRowError",
    "cs224n_path",
    "load_cs224n",
    "load_cs224n_file",
    "write_cs224n_predictions",
]
