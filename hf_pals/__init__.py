"""hf_pals: BERT and PALs (Stickland & Murray, 2019) on the Hugging Face stack.

Importing this package registers the "pals" PEFT method, so `peft.get_peft_model`,
`PeftModel.from_pretrained` and transformers' `model.load_adapter` handle `PALConfig` adapters.
"""

from .allocator import keep_freed_memory
from .modeling import MultiTaskModel
from . import pipeline as _pipeline  # noqa: F401 (registers the "hf-pals" transformers pipeline task)
from .tasks import TaskSpec
from .tuner import BASE_ADAPTER_NAME, PALConfig, PALModel, pal_parameter_count

__version__ = "0.1.0"

__all__ = [
    "PALConfig",
    "PALModel",
    "BASE_ADAPTER_NAME",
    "pal_parameter_count",
    "MultiTaskModel",
    "MultiTaskPredictor",
    "EnsemblePredictor",
    "MultiTaskTrainer",
    "TaskSpec",
    "keep_freed_memory",
    "use_fast_dropout",
    "__version__",
]

#: Imported on first use: they pull in transformers.Trainer / evaluate + datasets (seconds), which code
#: that only loads adapters (`import hf_pals; model.load_adapter(...)`) does not need.
_LAZY = {"MultiTaskTrainer": ".training", "MultiTaskPredictor": ".predictor", "EnsemblePredictor": ".predictor",
         "use_fast_dropout": ".encoder_dropout"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
