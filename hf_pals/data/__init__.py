"""Data loading for hf_pals: the CS224N minBERT multi-task files (SST, Quora, STS)."""

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
