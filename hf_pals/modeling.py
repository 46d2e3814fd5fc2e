"""`MultiTaskModel`: one shared BERT encoder, one PAL adapter per task, one head per task.

The adapters are optional: `from_base(..., adapters=False)` keeps the encoder a plain transformers
`BertModel`, shared by every task as is (fine-tuned jointly, or frozen); each task then has only its head
and, with `TaskSpec.top_layer`, its own transformer layer on top (the "top layer alone" variant).

Saved as a bundle directory, all safetensors (the file names and the checks on them are in `bundle.py`):

    hf_pals_config.json                base model id, tasks, whether the encoder was trained, whether there are adapters
    adapters/<task>/adapter_model.safetensors + adapter_config.json   (PEFT's own layout; absent without adapters)
    heads.safetensors                  "<task>.<param>" tensors of every head (with its top layer, if any)
    encoder/model.safetensors + config.json   the shared encoder, only when it was trained
    tokenizer files                    when a tokenizer is saved alongside

With a frozen encoder a bundle holds only what differs from the base model, so its adapters load onto
the plain base with `PeftModel.from_pretrained` or transformers' `model.load_adapter`; without adapters
and with a frozen encoder that is the heads (and top layers) alone.

Loading is safe by default: only safetensors are read (a pickle can run code when unpickled, so a
pickle-only bundle is refused unless the caller passes `allow_pickle=True`), and a truncated file, an
adapter made for another base, or an unknown field in `hf_pals_config.json` fails with an error that
names the file and what is wrong.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from typing import Optional, Sequence, Union

import torch
from peft import PeftModel, get_peft_model
from peft.utils import set_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from . import hub
from .base_models import resolve_base_model

# The bundle's layout and file checks live in bundle.py; imported from here too, where they lived before.
from .bundle import (  # noqa: F401 (re-exported)
    ADAPTER_WEIGHTS_NAME,
    ADAPTERS_DIR,
    BUNDLE_CONFIG_FIELDS,
    BUNDLE_CONFIG_NAME,
    ENCODER_DIR,
    ENCODER_WEIGHTS_NAME,
    EVAL_RESULTS_NAME,
    HEADS_NAME,
    PICKLE_NAMES,
    adapter_dir,
    bundle_has_adapters,
    check_adapter_fits,
    check_bundle_files,
    load_weights_file,
    read_bundle_config,
    weight_shapes,
    weights_file,
    write_pipeline_marker,
)
from .heads import TaskHead, pool, task_loss
from .tasks import TaskSpec
from .tuner import PALConfig, PALLayer


class MultiTaskModel(nn.Module):
    """A shared encoder with one PAL adapter and one head per task (or no adapters at all).

    `forward(task=..., input_ids=..., attention_mask=..., labels=...)` routes the batch to the task's
    adapter (through PEFT's `adapter_names` forward argument, never `set_adapter`) and head, and
    returns `{"loss", "logits"}`. For a siamese pair task the batch holds the first sentences in its
    first half and the second sentences in its second half; for a `pair_encoding: both` task of n
    examples it holds 3n rows: the n packed pairs, then the n first sentences, then the n second
    sentences (see `data.multitask.MultiTaskCollator`). The logits are one output per example in all cases.

    `encoder` is a `PeftModel` holding one adapter per task, or a plain `PreTrainedModel` (a
    `BertModel`) for a model without adapters; `has_adapters` tells which, and `bert` is the
    underlying `BertModel` in both cases.
    """

    #: The loss is a per-batch mean; the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(
        self,
        encoder: Union[PeftModel, PreTrainedModel],
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
        #: Parts that do not train (see `freeze`): "encoder" and/or task names; not saved in the bundle.
        self.frozen: tuple[str, ...] = ()
        hidden_size = self.bert.config.hidden_size
        self.heads = nn.ModuleDict(
            {
                name: TaskHead(spec, hidden_size, top_layer=self._copy_last_layer() if spec.top_layer else None)
                for name, spec in self.tasks.items()
            }
        )
        self._set_trainable()

    @property
    def has_adapters(self) -> bool:
        """Whether the encoder carries one PEFT adapter per task (false: a plain shared encoder)."""
        return isinstance(self.encoder, PeftModel)

    @property
    def bert(self) -> PreTrainedModel:
        """The underlying transformers model (a `BertModel`): inside PEFT's wrapper, or the encoder itself."""
        return self.encoder.get_base_model() if self.has_adapters else self.encoder

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (as `PreTrainedModel.device`; transformers' `Pipeline` reads it)."""
        return next(self.parameters()).device

    def _routing(self, adapter_names) -> dict:
        """The encoder's keyword arguments that route rows to adapters (PEFT's `adapter_names`); none
        without adapters, where every task shares the same encoder."""
        return {"adapter_names": adapter_names} if self.has_adapters else {}

    def _copy_last_layer(self) -> nn.Module:
        """A copy of the encoder's last transformer layer (without any adapter): the initial weights of a
        task-specific top layer ("top layer" adaptation, CS224N report 002: a task-specific BERT layer on
        top of the shared model, T * 12 d^2 parameters for T tasks)."""
        last = self.bert.encoder.layer[-1]
        base = last.get_base_layer() if hasattr(last, "get_base_layer") else last
        return copy.deepcopy(base)

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
        adapters: bool = True,
    ) -> "MultiTaskModel":
        """A new model on a pretrained base: one fresh adapter per task from `pal_config` (or
        `pal_configs[task]`; the default `PALConfig` when neither is given), one fresh head per task.

        `adapters=False` builds no adapters: the encoder is the plain `AutoModel` of the base (or of
        `encoder_path`), shared by every task, which then differ only in their heads and top layers
        (`TaskSpec.top_layer`); `pal_config` and `pal_configs` must not be given then."""
        if not isinstance(tasks, dict):
            tasks = {t.name: t for t in tasks}
        if not tasks:
            raise ValueError("a MultiTaskModel needs at least one task")
        if not adapters:
            if pal_config is not None or pal_configs:
                raise ValueError("adapters=False builds a model without adapters; pass no pal_config or pal_configs")
            bert = AutoModel.from_pretrained(encoder_path or resolve_base_model(base_model_name_or_path))
            return cls(bert, tasks, base_model_name_or_path, freeze_encoder=freeze_encoder, max_length=max_length)
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
        for config in encoder.peft_config.values():  # PEFT renames it to encoder_path (a bundle's encoder/): keep the base
            config.base_model_name_or_path = base_model_name_or_path
        return cls(encoder, tasks, base_model_name_or_path, freeze_encoder=freeze_encoder, max_length=max_length)

    def _set_trainable(self) -> None:
        """Every adapter trains (all are active; routing picks one per batch); the encoder only when
        neither `freeze_encoder` nor `frozen` freezes it. Done once (and again after `add_task`,
        `remove_task`, `freeze`), never per step: `set_adapter` flips requires_grad. The heads (with
        their top layers) train; a task in `frozen` keeps its adapter and head as they are."""
        if self.has_adapters:
            self.encoder.base_model.set_adapter(list(self.tasks))
        encoder_trains = not (self.freeze_encoder or "encoder" in self.frozen)
        for name, param in self.bert.named_parameters():
            if "pals_" not in name:
                param.requires_grad_(encoder_trains)
        for name, head in self.heads.items():
            head.requires_grad_(name not in self.frozen)
        for name in self.frozen:
            for param in self.adapter_parameters(name):
                param.requires_grad_(False)

    # ------------------------------------------------------------------------------ grow / freeze
    def adapter_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters of `task`'s adapter (each once, also V_E/V_D shared by all layers); none
        without adapters."""
        params = {}
        for module in self.bert.modules() if self.has_adapters else ():
            if isinstance(module, PALLayer):
                for attr in module.adapter_layer_names:
                    if task in getattr(module, attr):
                        params.update((id(p), p) for p in getattr(module, attr)[task].parameters())
        return list(params.values())

    def freeze(self, parts: Sequence[str]) -> None:
        """Freeze exactly `parts` (and unfreeze the rest; `freeze([])` unfreezes all): "encoder" (the
        shared encoder's weights) and/or task names (that task's adapter and head, top layer included).

        This is about training only. Unlike `freeze_encoder` ("the encoder is the unchanged base", so the
        bundle has no encoder/), a frozen "encoder" that was trained before is still saved in encoder/,
        unchanged: a grown model keeps the encoder its old tasks were trained with."""
        parts = list(dict.fromkeys(parts))
        valid = ["encoder", *self.tasks]
        unknown = [p for p in parts if p not in valid]
        if unknown:
            raise ValueError(f"freeze: unknown part(s) {unknown}; valid parts are {valid}")
        self.frozen = tuple(parts)
        self._set_trainable()

    def add_task(self, spec: TaskSpec, pal_config: Optional[Union[PALConfig, dict]] = None) -> None:
        """Add task `spec.name`: a fresh PAL adapter (PEFT `add_adapter`, from `pal_config`, the default
        `PALConfig` when None) and a fresh head (with a copy of the encoder's last layer if
        `spec.top_layer`). The paper's point: a new task costs one adapter and a head, the other tasks'
        weights are untouched. A model without adapters gets the head only; `pal_config` must be None then.
        Afterwards every adapter not in `frozen` is active and trains (`_set_trainable`)."""
        if spec.name in self.tasks:
            raise ValueError(f"add_task: task {spec.name!r} already exists; this model has tasks {sorted(self.tasks)}")
        if spec.name == "encoder":
            raise ValueError("add_task: 'encoder' is not a valid task name (it names the shared encoder in freeze)")
        if self.has_adapters:
            if isinstance(pal_config, dict) or pal_config is None:
                pal_config = PALConfig(**(pal_config or {}))
            config = copy.deepcopy(pal_config)
            config.base_model_name_or_path = self.base_model_name_or_path
            config.inference_mode = False
            self.encoder.add_adapter(spec.name, config)
        elif pal_config is not None:
            raise ValueError(f"add_task: this model has no adapters, so task {spec.name!r} gets a head only; pass no pal_config")
        weight = next(self.bert.parameters())
        top_layer = self._copy_last_layer() if spec.top_layer else None
        head = TaskHead(spec, self.bert.config.hidden_size, top_layer=top_layer).to(weight.device)
        self.tasks[spec.name] = spec
        self.heads[spec.name] = head
        self._set_trainable()

    def remove_task(self, name: str) -> None:
        """Remove task `name`: its adapter (PEFT `delete_adapter`) and its head; the last task cannot go."""
        if name not in self.tasks:
            raise ValueError(f"remove_task: unknown task {name!r}; this model has tasks {sorted(self.tasks)}")
        if len(self.tasks) == 1:
            raise ValueError(f"remove_task: {name!r} is the model's last task; a MultiTaskModel needs at least one")
        if self.has_adapters:
            self.encoder.delete_adapter(name)
        del self.tasks[name]
        del self.heads[name]
        self.frozen = tuple(p for p in self.frozen if p != name)
        self._set_trainable()

    # --------------------------------------------------------------------------------------- forward
    def encode(self, task: str, input_ids, attention_mask, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        """Pooled sentence vectors of `task`'s adapter, if the model has adapters, and top layer, if the
        task has one; one per row. `inputs_embeds` (word embeddings) replaces `input_ids`, e.g. to
        perturb them for SMART."""
        outputs = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            **self._routing(task),
        )
        return self._pool_task(task, outputs.last_hidden_state, attention_mask)

    def _pool_task(self, task: str, hidden_states: torch.Tensor, attention_mask) -> torch.Tensor:
        """The task's top layer (if any) and pooling over the encoder's token states."""
        top_layer = self.heads[task].top_layer
        if top_layer is not None:
            mask = create_bidirectional_mask(
                config=self.bert.config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )
            hidden_states = top_layer(hidden_states, mask)
        return pool(hidden_states, attention_mask, self.tasks[task].pooling)

    def forward(
        self, task: str, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, inputs_embeds=None, **unused
    ):
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; this model has tasks {sorted(self.tasks)}")
        if attention_mask is None:
            raise ValueError("MultiTaskModel.forward needs an attention_mask (pooling reads it)")
        spec = self.tasks[task]
        pooled = self.encode(task, input_ids, attention_mask, token_type_ids, inputs_embeds=inputs_embeds)
        if spec.is_siamese:
            half = pooled.shape[0] // 2
            logits = self.heads[task](pooled[:half], pooled[half:])
        elif spec.is_both:  # rows: n packed pairs, n first sentences, n second sentences
            if pooled.shape[0] % 3:
                raise ValueError(
                    f"task {task!r} has pair_encoding 'both': a batch holds 3 rows per example (packed pairs, "
                    f"first sentences, second sentences), got {pooled.shape[0]} rows"
                )
            n = pooled.shape[0] // 3
            logits = self.heads[task](pooled[n : 2 * n], pooled[2 * n :], packed=pooled[:n])
        else:
            logits = self.heads[task](pooled)
        loss = task_loss(spec, logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}

    def forward_mixed(self, tasks, row_tasks, row_example, input_ids, attention_mask, token_type_ids=None, **unused):
        """One forward pass over examples of several tasks (a batch from `MultiTaskCollator.encode_mixed`).

        The shared encoder runs once on every row, each row routed to its task's adapter by PEFT's
        per-example `adapter_names` (without adapters every row takes the same path); then each task's
        rows go through its top layer, pooling and head. An example's rows are next to each other: one
        row (single sentence, packed pair), two (siamese: first, second sentence) or three (`pair_encoding:
        both`: packed pair, first sentence, second sentence).
        Returns `{task: (example indices, head outputs)}`, equal to running each task's examples alone."""
        unknown = sorted(set(tasks) - set(self.tasks))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model has tasks {sorted(self.tasks)}")
        routing = self._routing(row_tasks)
        hidden_states = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **routing
        ).last_hidden_state
        outputs = {}
        for task in dict.fromkeys(tasks):
            rows = torch.tensor([i for i, t in enumerate(row_tasks) if t == task], device=hidden_states.device)
            states, mask = hidden_states.index_select(0, rows), attention_mask.index_select(0, rows)
            pooled = self._pool_task(task, states, mask)
            examples = row_example.index_select(0, rows.to(row_example.device))
            if self.tasks[task].is_siamese:  # rows come in (first, second) pairs per example
                outputs[task] = (examples[0::2], self.heads[task](pooled[0::2], pooled[1::2]))
            elif self.tasks[task].is_both:  # rows come in (packed, first, second) triples per example
                outputs[task] = (examples[0::3], self.heads[task](pooled[1::3], pooled[2::3], packed=pooled[0::3]))
            else:
                outputs[task] = (examples, self.heads[task](pooled))
        return outputs

    # ------------------------------------------------------------------------------------ save / load
    def bundle_config(self) -> dict:
        return {
            "hf_pals_version": _version(),
            "base_model_name_or_path": self.base_model_name_or_path,
            "freeze_encoder": self.freeze_encoder,
            "adapters": self.has_adapters,
            "max_length": self.max_length,
            "tasks": {name: spec.to_dict() for name, spec in self.tasks.items()},
        }

    def save_pretrained(self, save_directory: str, tokenizer=None) -> None:
        """Write the bundle (see the module docstring) to `save_directory`."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, BUNDLE_CONFIG_NAME), "w") as f:
            json.dump(self.bundle_config(), f, indent=2)
        if self.has_adapters:
            # The embeddings are never adapted; without this PEFT looks the base model up on the Hub.
            self.encoder.save_pretrained(os.path.join(save_directory, ADAPTERS_DIR), save_embedding_layers=False)
        heads = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        save_file(heads, os.path.join(save_directory, HEADS_NAME), metadata={"format": "pt"})
        if not self.freeze_encoder:
            encoder_dir = os.path.join(save_directory, ENCODER_DIR)
            os.makedirs(encoder_dir, exist_ok=True)
            state = {k: v.detach().contiguous().cpu() for k, v in self.encoder_state_dict().items()}
            save_file(state, os.path.join(encoder_dir, ENCODER_WEIGHTS_NAME), metadata={"format": "pt"})
            self.bert.config.save_pretrained(encoder_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
        write_pipeline_marker(save_directory)  # pipeline("hf-pals", model=save_directory) finds the pipeline

    def push_to_hub(self, repo_id: str, tokenizer=None, eval_results: Optional[dict] = None, **kwargs):
        """Save this model as a bundle (with `tokenizer` and an `eval_results` report, if given) and upload
        it to the Hub repo `repo_id` with a model card; `kwargs` go to `hf_pals.hub.push_to_hub`
        (`private`, `token`, `revision`, `commit_message`, `datasets`). Returns the `CommitInfo`."""
        with tempfile.TemporaryDirectory() as bundle:
            self.save_pretrained(bundle, tokenizer=tokenizer)
            if eval_results is not None:
                with open(os.path.join(bundle, EVAL_RESULTS_NAME), "w") as f:
                    json.dump(eval_results, f, indent=2)
            return hub.push_to_hub(bundle, repo_id, **kwargs)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The shared encoder's weights under plain `BertModel` names (no PAL tensors, no `base_layer`)."""
        state = self.bert.state_dict()
        return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".pals_" not in k}

    @classmethod
    def from_pretrained(cls, model_dir: str, is_trainable: bool = False, allow_pickle: bool = False) -> "MultiTaskModel":
        """Load a bundle written by `save_pretrained`.

        Every file is checked before the model is built (see the module docstring); `allow_pickle=True`
        also accepts `adapter_model.bin`, `heads.bin` and `encoder/pytorch_model.bin`, for bundles you trust.
        A bundle saved without adapters (`"adapters": false`; older bundles always have them) is rebuilt
        without adapters, and no `adapters/` directory is read.
        """
        config = read_bundle_config(model_dir)
        config_path = os.path.join(model_dir, BUNDLE_CONFIG_NAME)
        tasks = {}
        for name, values in config["tasks"].items():
            try:
                tasks[name] = TaskSpec.from_dict(name, values)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{config_path}: {err}") from err
        adapters = bundle_has_adapters(config)
        adapter_tasks = list(tasks) if adapters else []
        pal_configs = {name: PALConfig.from_pretrained(adapter_dir(model_dir, name)) for name in adapter_tasks}
        for pal_config in pal_configs.values():
            pal_config.inference_mode = False
        encoder_dir = os.path.join(model_dir, ENCODER_DIR)
        check_bundle_files(model_dir, adapter_tasks, allow_pickle=allow_pickle)
        base_config = AutoConfig.from_pretrained(
            encoder_dir if os.path.isdir(encoder_dir) else resolve_base_model(config["base_model_name_or_path"])
        )
        for name in adapter_tasks:
            path = weights_file(adapter_dir(model_dir, name), ADAPTER_WEIGHTS_NAME, allow_pickle)
            check_adapter_fits(name, path, weight_shapes(path), base_config)
        model = cls.from_base(
            config["base_model_name_or_path"],
            tasks,
            pal_configs=pal_configs or None,
            freeze_encoder=config.get("freeze_encoder", False),
            encoder_path=encoder_dir if os.path.isdir(encoder_dir) else None,
            max_length=config.get("max_length", 128),
            adapters=adapters,
        )
        model.load_weights(model_dir, load_encoder=False, allow_pickle=allow_pickle)
        model.train(is_trainable)
        if not is_trainable:
            model.requires_grad_(False)
        return model

    def load_weights(self, model_dir: str, load_encoder: bool = True, allow_pickle: bool = False) -> None:
        """Load a bundle's tensors into this model in place (used to resume from a checkpoint).

        The bundle must have adapters exactly when this model does (its `hf_pals_config.json` says)."""
        config_path = os.path.join(model_dir, BUNDLE_CONFIG_NAME)
        if os.path.exists(config_path):
            saved = bundle_has_adapters(read_bundle_config(model_dir))
            if saved != self.has_adapters:
                have = "has adapters" if saved else "has no adapters"
                wanted = "one adapter per task" if self.has_adapters else "no adapters"
                raise ValueError(f"{config_path}: the bundle {have}, this model has {wanted}")
        base_config = self.bert.config
        for name in self.tasks if self.has_adapters else ():
            path = weights_file(adapter_dir(model_dir, name), ADAPTER_WEIGHTS_NAME, allow_pickle)
            weights = load_weights_file(path)
            check_adapter_fits(name, path, {k: v.shape for k, v in weights.items()}, base_config)
            result = set_peft_model_state_dict(self.encoder, weights, adapter_name=name)
            unexpected = getattr(result, "unexpected_keys", None) or []
            if unexpected:
                raise ValueError(f"{path}: adapter weights do not fit this model: unexpected keys {unexpected[:5]}")
        heads = load_weights_file(weights_file(model_dir, HEADS_NAME, allow_pickle))
        self.heads.load_state_dict(heads, strict=True)
        encoder_dir = os.path.join(model_dir, ENCODER_DIR)
        if load_encoder and os.path.isdir(encoder_dir):
            encoder_file = weights_file(encoder_dir, ENCODER_WEIGHTS_NAME, allow_pickle)
            self.load_encoder_state_dict(load_weights_file(encoder_file))

    def load_encoder_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load `encoder_state_dict`-style weights (plain `BertModel` names) into the shared encoder."""
        base = self.bert
        names = {k.replace(".base_layer.", "."): k for k in base.state_dict() if ".pals_" not in k}
        missing = sorted(set(names) - set(state))
        if missing:
            raise ValueError(f"encoder weights are missing {len(missing)} tensors, e.g. {missing[:3]}")
        base.load_state_dict({names[k]: v for k, v in state.items() if k in names}, strict=False)



def _version() -> str:
    from . import __version__

    return __version__


