"""`MultiTaskModel`: one shared BERT encoder, one PAL adapter per task, one head per task.

Saved as a bundle directory, all safetensors:

    hf_pals_config.json                base model id, tasks, whether the encoder was trained
    adapters/<task>/adapter_model.safetensors + adapter_config.json   (PEFT's own layout)
    heads.safetensors                  "<task>.<param>" tensors of every head
    encoder/model.safetensors + config.json   the shared encoder, only when it was trained
    tokenizer files                    when a tokenizer is saved alongside

With a frozen encoder a bundle holds only what differs from the base model, so its adapters load onto
the plain base with `PeftModel.from_pretrained` or transformers' `model.load_adapter`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Optional, Sequence, Union

import torch
from peft import PeftModel, get_peft_model
from peft.utils import load_peft_weights, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel

from .base_models import resolve_base_model
from .heads import TaskHead, pool, task_loss
from .tasks import TaskSpec
from .tuner import PALConfig

BUNDLE_CONFIG_NAME = "hf_pals_config.json"
HEADS_NAME = "heads.safetensors"
ADAPTERS_DIR = "adapters"
ENCODER_DIR = "encoder"
ENCODER_WEIGHTS_NAME = "model.safetensors"


class MultiTaskModel(nn.Module):
    """A shared encoder with one PAL adapter and one head per task.

    `forward(task=..., input_ids=..., attention_mask=..., labels=...)` routes the batch to the task's
    adapter (through PEFT's `adapter_names` forward argument, never `set_adapter`) and head, and
    returns `{"loss", "logits"}`. For a siamese pair task the batch holds the first sentences in its
    first half and the second sentences in its second half (see `data.collator`).
    """

    #: The loss is a per-batch mean; the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(
        self,
        encoder: PeftModel,
        tasks: dict[str, TaskSpec],
        base_model_name_or_path: str,
        freeze_encoder: bool = False,
        max_length: int = 128,
    ):
        super().__init__()
        self.max_length = max_length
        self.encoder = encoder
        self.tasks = dict(tasks)
        self.base_model_name_or_path = base_model_name_or_path
        self.freeze_encoder = freeze_encoder
        hidden_size = encoder.get_base_model().config.hidden_size
        self.heads = nn.ModuleDict({name: TaskHead(spec, hidden_size) for name, spec in self.tasks.items()})
        self._set_trainable()

    # ----------------------------------------------------------------------------------------- build
    @classmethod
    def from_base(
        cls,
        base_model_name_or_path: str,
        tasks: Union[Sequence[TaskSpec], dict[str, TaskSpec]],
        pal_config: Optional[Union[PALConfig, dict]] = None,
        freeze_encoder: bool = False,
        pal_configs: Optional[dict[str, PALConfig]] = None,
        encoder_path: Optional[str] = None,
        max_length: int = 128,
    ) -> "MultiTaskModel":
        """A new model on a pretrained base: one fresh adapter per task from `pal_config` (or
        `pal_configs[task]`), one fresh head per task."""
        if not isinstance(tasks, dict):
            tasks = {t.name: t for t in tasks}
        if not tasks:
            raise ValueError("a MultiTaskModel needs at least one task")
        if isinstance(pal_config, dict) or pal_config is None:
            pal_config = PALConfig(**(pal_config or {}))
        configs = {name: copy.deepcopy((pal_configs or {}).get(name, pal_config)) for name in tasks}
        bert = AutoModel.from_pretrained(encoder_path or resolve_base_model(base_model_name_or_path))
        for config in configs.values():
            config.base_model_name_or_path = base_model_name_or_path
        names = list(tasks)
        encoder = get_peft_model(bert, configs[names[0]], adapter_name=names[0])
        for name in names[1:]:
            encoder.add_adapter(name, configs[name])
        return cls(encoder, tasks, base_model_name_or_path, freeze_encoder=freeze_encoder, max_length=max_length)

    def _set_trainable(self) -> None:
        """Every adapter trains (all are active; routing picks one per batch); the encoder only when
        not frozen. Done once: `set_adapter` flips requires_grad, which must not happen per step."""
        self.encoder.base_model.set_adapter(list(self.tasks))
        for name, param in self.encoder.get_base_model().named_parameters():
            if "pals_" not in name:
                param.requires_grad_(not self.freeze_encoder)

    # --------------------------------------------------------------------------------------- forward
    def encode(self, task: str, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Pooled sentence vectors of `task`'s adapter, one per row."""
        outputs = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            adapter_names=task,
        )
        return pool(outputs.last_hidden_state, attention_mask, self.tasks[task].pooling)

    def forward(self, task: str, input_ids, attention_mask, token_type_ids=None, labels=None, **unused):
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; this model has tasks {sorted(self.tasks)}")
        spec = self.tasks[task]
        pooled = self.encode(task, input_ids, attention_mask, token_type_ids)
        if spec.is_siamese:
            half = pooled.shape[0] // 2
            logits = self.heads[task](pooled[:half], pooled[half:])
        else:
            logits = self.heads[task](pooled)
        loss = task_loss(spec, logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}

    # ------------------------------------------------------------------------------------ save / load
    def bundle_config(self) -> dict:
        return {
            "hf_pals_version": _version(),
            "base_model_name_or_path": self.base_model_name_or_path,
            "freeze_encoder": self.freeze_encoder,
            "max_length": self.max_length,
            "tasks": {name: spec.to_dict() for name, spec in self.tasks.items()},
        }

    def save_pretrained(self, save_directory: str, tokenizer=None) -> None:
        """Write the bundle (see the module docstring) to `save_directory`."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, BUNDLE_CONFIG_NAME), "w") as f:
            json.dump(self.bundle_config(), f, indent=2)
        # The embeddings are never adapted; without this PEFT looks the base model up on the Hub.
        self.encoder.save_pretrained(os.path.join(save_directory, ADAPTERS_DIR), save_embedding_layers=False)
        heads = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        save_file(heads, os.path.join(save_directory, HEADS_NAME), metadata={"format": "pt"})
        if not self.freeze_encoder:
            encoder_dir = os.path.join(save_directory, ENCODER_DIR)
            os.makedirs(encoder_dir, exist_ok=True)
            state = {k: v.detach().contiguous().cpu() for k, v in self.encoder_state_dict().items()}
            save_file(state, os.path.join(encoder_dir, ENCODER_WEIGHTS_NAME), metadata={"format": "pt"})
            self.encoder.get_base_model().config.save_pretrained(encoder_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The shared encoder's weights under plain `BertModel` names (no PAL tensors, no `base_layer`)."""
        state = self.encoder.get_base_model().state_dict()
        return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".pals_" not in k}

    @classmethod
    def from_pretrained(cls, model_dir: str, is_trainable: bool = False) -> "MultiTaskModel":
        """Load a bundle written by `save_pretrained` (safetensors only)."""
        config = read_bundle_config(model_dir)
        tasks = {name: TaskSpec.from_dict(name, values) for name, values in config["tasks"].items()}
        pal_configs = {name: PALConfig.from_pretrained(adapter_dir(model_dir, name)) for name in tasks}
        for pal_config in pal_configs.values():
            pal_config.inference_mode = False
        encoder_dir = os.path.join(model_dir, ENCODER_DIR)
        model = cls.from_base(
            config["base_model_name_or_path"],
            tasks,
            pal_configs=pal_configs,
            freeze_encoder=config.get("freeze_encoder", False),
            encoder_path=encoder_dir if os.path.isdir(encoder_dir) else None,
            max_length=config.get("max_length", 128),
        )
        model.load_weights(model_dir, load_encoder=False)
        model.train(is_trainable)
        if not is_trainable:
            model.requires_grad_(False)
        return model

    def load_weights(self, model_dir: str, load_encoder: bool = True) -> None:
        """Load a bundle's tensors into this model in place (used to resume from a checkpoint)."""
        for name in self.tasks:
            path = adapter_dir(model_dir, name)
            weights = load_peft_weights(path, device="cpu")
            result = set_peft_model_state_dict(self.encoder, weights, adapter_name=name)
            unexpected = getattr(result, "unexpected_keys", None) or []
            if unexpected:
                raise ValueError(f"{path}: adapter weights do not fit this model: unexpected keys {unexpected[:5]}")
        heads = load_file(os.path.join(model_dir, HEADS_NAME))
        self.heads.load_state_dict(heads, strict=True)
        encoder_file = os.path.join(model_dir, ENCODER_DIR, ENCODER_WEIGHTS_NAME)
        if load_encoder and os.path.exists(encoder_file):
            self.load_encoder_state_dict(load_file(encoder_file))

    def load_encoder_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        base = self.encoder.get_base_model()
        names = {k.replace(".base_layer.", "."): k for k in base.state_dict() if ".pals_" not in k}
        missing = sorted(set(names) - set(state))
        if missing:
            raise ValueError(f"encoder weights are missing {len(missing)} tensors, e.g. {missing[:3]}")
        base.load_state_dict({names[k]: v for k, v in state.items() if k in names}, strict=False)


def adapter_dir(model_dir: str, task: str) -> str:
    """Where PEFT's `save_pretrained` puts adapter `task` inside a bundle."""
    root = os.path.join(model_dir, ADAPTERS_DIR)
    return root if task == "default" else os.path.join(root, task)


def read_bundle_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, BUNDLE_CONFIG_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a hf_pals model directory")
    with open(path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("base_model_name_or_path", "tasks"):
        if key not in config:
            raise ValueError(f"{path}: missing field {key!r}")
    return config


def _version() -> str:
    from . import __version__

    return __version__


