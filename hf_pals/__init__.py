"""hf_pals: BERT and PALs (Stickland & Murray, 2019) on the Hugging Face stack.

Importing this package registers the "pals" PEFT method, so `peft.get_peft_model`,
`PeftModel.from_pretrained` and transformers' `model.load_adapter` handle `PALConfig` adapters.
"""

from .tuner import BASE_ADAPTER_NAME, PALConfig, PALModel, pal_parameter_count

__version__ = "0.1.0"

__all__ = ["PALConfig", "PALModel", "BASE_ADAPTER_NAME", "pal_parameter_count", "__version__"]
