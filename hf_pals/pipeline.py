"""`MultiTaskPipeline`: a saved bundle served through transformers' `pipeline()` as the "hf-pals" task.

    import hf_pals                                     # registers the "hf-pals" task
    from hf_pals.pipeline import load_pipeline

    pipe = load_pipeline("runs/cs224n_pals")           # a bundle directory, or a Hub repo id
    pipe(["a gripping , funny film", "dull"], task_name="sst")
    # [{"label": 4, "score": 0.61}, {"label": 0, "score": 0.55}]    (class names, when the task has label_names)
    pipe([("how do i cook rice ?", "what is the way to cook rice ?")], task_name="quora")
    pipe(["dull", {"text": "a man plays a guitar .", "text_pair": "a man is playing guitar ."}],
         task_name=["sst", "sts"], batch_size=8)      # one task per input: mixed-task batches

    pipeline("hf-pals", model=MultiTaskModel.from_pretrained(d), tokenizer=tok)   # a loaded model
    pipeline("hf-pals", model=d)                       # a bundle with the `config.json` marker (below)

Each input is a text, or a sentence pair as an `(a, b)` tuple or `{"text": a, "text_pair": b}` (the
convention of transformers' text-classification pipeline); each output is `{"label", "score"}`, exactly as
`MultiTaskPredictor.predict` gives it. Rows are tokenized per batch by the bundle's `MultiTaskCollator`
(`encode_mixed`) and run through `MultiTaskModel.forward_mixed`, so a batch may mix tasks and the encoder
still runs once per batch.

Why `pipeline("hf-pals", model=MODEL_DIR)` needs a marker: for a str `model`, transformers' `pipeline()`
(transformers/pipelines/__init__.py) calls `AutoConfig.from_pretrained(model)` before it even looks the task
up in the registry, and a plain bundle has no `config.json` at its top (only hf_pals_config.json), so that
call raises "Unrecognized model in MODEL_DIR. Should have a `model_type` key in its config.json." No
registered pipeline class or `pt_model` runs before it. A bundle whose top holds a `config.json` of model
type "hf-pals" (`write_pipeline_config`, also written by `MultiTaskPipeline.save_pretrained`) gets past that
step: `AutoConfig` maps it to `MultiTaskPipelineConfig` (registered below) and `pipeline()` then loads the
bundle through the registered `pt_model`, `MultiTaskBundleLoader`. `load_pipeline` works for any bundle.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer, Pipeline, PreTrainedConfig
from transformers import pipeline as transformers_pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .bundle import PIPELINE_MARKER_NAME, PIPELINE_MODEL_TYPE
from .modeling import MultiTaskModel

#: The task name `pipeline()` knows a bundle's pipeline by.
PIPELINE_TASK = "hf-pals"
#: transformers' config file, which `pipeline()` reads first for a str model (see the module docstring);
#: every bundle has it since `MultiTaskModel.save_pretrained` writes it (`bundle.write_pipeline_marker`).
PIPELINE_CONFIG_NAME = PIPELINE_MARKER_NAME


class MultiTaskPipelineConfig(PreTrainedConfig):
    """The `config.json` marker of a bundle, for transformers' `AutoConfig` only: it says "an hf_pals
    bundle"; everything the model needs stays in hf_pals_config.json."""

    model_type = PIPELINE_MODEL_TYPE


def write_pipeline_config(model_dir: str) -> str:
    """Write the `config.json` marker into bundle `model_dir`, so `pipeline("hf-pals", model=model_dir)`
    loads it (see the module docstring). Returns the file's path."""
    from .bundle import read_bundle_config

    read_bundle_config(model_dir)  # refuse a directory that is not a bundle, naming it
    MultiTaskPipelineConfig().save_pretrained(model_dir)
    return os.path.join(model_dir, PIPELINE_CONFIG_NAME)


class MultiTaskBundleLoader:
    """The registered `pt_model` of "hf-pals": `pipeline()` calls `from_pretrained` with a str model (once
    the `config.json` marker let it through) and gets the bundle's `MultiTaskModel`."""

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        revision: Optional[str] = None,
        token: Union[str, bool, None] = None,
        allow_pickle: bool = False,
        dtype: Union[str, torch.dtype, None] = None,
        **unused,
    ) -> MultiTaskModel:
        """The bundle's model, from a directory or a Hub repo id (downloaded as `MultiTaskPredictor` does).
        `dtype` ("auto", the default of `pipeline()`, keeps the saved float32) casts the model; `allow_pickle`
        comes through `pipeline(..., model_kwargs={"allow_pickle": True})`."""
        from .predictor import MultiTaskPredictor

        if unused.get("device_map") is not None:
            raise ValueError("the hf-pals pipeline does not take device_map; pass device= instead")
        model = MultiTaskPredictor.from_pretrained(
            model_name_or_path, allow_pickle=allow_pickle, revision=revision, token=token or None
        ).model
        if isinstance(dtype, torch.dtype):
            model.to(dtype)
        return model


class MultiTaskPipeline(Pipeline):
    """A transformers `Pipeline` over a `MultiTaskModel`: `pipe(inputs, task_name=...)`.

    Args:
        model: the `MultiTaskModel` (`pipeline()` passes it).
        tokenizer: its tokenizer (an object or a name); by default the base model's, as `load_for_inference`.
        collator: a `MultiTaskCollator` to use as is (then `tokenizer` is its tokenizer).
        task_name: a default for the calls' `task_name`.
        Other arguments (`device`, `batch_size`, ...) are transformers' `Pipeline` arguments.
    """

    # Text in, one tokenizer; no processors to look for in the bundle.
    _load_tokenizer = None
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, model, tokenizer=None, collator=None, task_name=None, **kwargs):
        from .data.multitask import MultiTaskCollator

        kwargs.pop("local_files_only", None)  # `pipeline()` reads it and passes it on; loading is done by now
        from .predictor import MultiTaskPredictor

        if not isinstance(model, MultiTaskModel):
            raise TypeError(
                f"the hf-pals pipeline runs a hf_pals MultiTaskModel, got {type(model).__name__}; load a bundle "
                "with MultiTaskModel.from_pretrained or hf_pals.pipeline.load_pipeline"
            )
        if collator is None:
            if isinstance(tokenizer, str):
                tokenizer = AutoTokenizer.from_pretrained(tokenizer)
            elif tokenizer is None:
                from .base_models import resolve_base_model

                tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(model.base_model_name_or_path))
            collator = MultiTaskCollator(tokenizer, model.tasks, max_length=model.max_length)
        self.collator = collator
        self.task_name = task_name
        self._predictor = MultiTaskPredictor  # its input rows and `{"label", "score"}` results
        self._task_ids = {name: i for i, name in enumerate(model.tasks)}
        #: Width of `_forward`'s outputs: every task's head outputs fit in one row (NaN-padded).
        self._width = max(spec.num_labels for spec in model.tasks.values())
        super().__init__(model=model.eval(), tokenizer=collator.tokenizer, **kwargs)

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tasks={self.tasks}, device={self.device.type})"

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise TypeError(f"the hf-pals pipeline got unexpected argument(s) {sorted(kwargs)}")
        return {}, {}, {}

    # ------------------------------------------------------------------------------------- calling
    def __call__(self, inputs, task_name: Union[str, Sequence[str], None] = None, **kwargs) -> list[dict[str, Any]]:
        """Predict `inputs` (one input or a list of them) for `task_name`: a task of the model for every
        input, or a list of task names, one per input. Returns one `{"label", "score"}` per input, in order
        (a list, also for one input). `batch_size`, `num_workers` as for any pipeline."""
        task_name = self.task_name if task_name is None else task_name
        if task_name is None:
            raise ValueError(
                f"the hf-pals pipeline needs task_name=: one of this model's tasks {self.tasks}, or a list of them, "
                "one per input"
            )
        items = self._items(inputs, task_name)
        if not items:
            return []
        return super().__call__(items, **kwargs)

    def _items(self, inputs, task_name) -> list[dict[str, Any]]:
        """`{"task", "input", "index"}` per input, after checking the task names."""
        names = [task_name] if isinstance(task_name, str) else list(task_name)
        unknown = sorted({n for n in names if n not in self.model.tasks}, key=str)
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model has tasks {self.tasks}")
        if isinstance(task_name, str):
            single = isinstance(inputs, dict) or self._predictor._is_single(self.model.tasks[task_name], inputs)
            items = [inputs] if single else list(inputs)
            names = names * len(items)
        else:
            items = [inputs] if isinstance(inputs, (str, dict)) else list(inputs)
            if len(names) != len(items):
                raise ValueError(f"task_name lists {len(names)} tasks for {len(items)} inputs; give one task per input")
        return [{"task": name, "input": item, "index": i} for i, (name, item) in enumerate(zip(names, items))]

    def preprocess(self, item: dict[str, Any]) -> dict[str, str]:
        """One input as a row of its task (`{"task", <text columns>}`); the collator tokenizes the rows of
        a batch together, in `get_iterator`."""
        spec = self.model.tasks[item["task"]]
        text = item["input"]
        if isinstance(text, dict):
            extra = sorted(set(text) - {"text", "text_pair"})
            if "text" not in text or extra:
                raise ValueError(
                    f"input {item['index']} is {text!r}; a dict input has a 'text' and, for a pair, a 'text_pair'"
                )
            text = (text["text"], text["text_pair"]) if "text_pair" in text else text["text"]
        return dict(self._predictor._row(spec, text, item["index"]), task=spec.name)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """transformers' iterator, with the collator's `encode_mixed` as the batches' collate function (for
        any batch size): one tokenization path, and batches that may mix tasks."""
        dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=self.collator.encode_mixed)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`forward_mixed` on one batch; per example its task's index and its head outputs, NaN-padded to one
        width, so transformers can split the batch into examples."""
        size = len(model_inputs["tasks"])
        task_ids = torch.empty(size, dtype=torch.long)
        outputs = torch.full((size, self._width), float("nan"))
        for task, (examples, head_outputs) in self.model.forward_mixed(**model_inputs).items():
            examples = examples.cpu()
            task_ids[examples] = self._task_ids[task]
            values = head_outputs.float().cpu().reshape(len(examples), -1)
            outputs[examples, : values.shape[1]] = values
        return {"task_ids": task_ids, "outputs": outputs}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """`{"label", "score"}` of one example, as `MultiTaskPredictor` computes it."""
        spec = self.model.tasks[self.tasks[int(model_outputs["task_ids"][0])]]
        values = model_outputs["outputs"][0]
        head_outputs = values[: spec.num_labels].unsqueeze(0) if spec.kind == "classification" else values[:1]
        (result,) = self._predictor._results(spec, head_outputs)
        return result

    def save_pretrained(self, save_directory: str, **unused) -> None:
        """Save the bundle (with the tokenizer) and its `config.json` marker, so `pipeline("hf-pals",
        model=save_directory)` loads it back."""
        self.model.save_pretrained(save_directory, tokenizer=self.tokenizer)
        write_pipeline_config(save_directory)


def load_pipeline(
    model_name_or_path: str,
    allow_pickle: bool = False,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    **kwargs,
) -> MultiTaskPipeline:
    """`pipeline("hf-pals", ...)` for any bundle directory or Hub repo id (marker or not): the bundle is
    loaded as `MultiTaskPredictor.from_pretrained` loads it (model and collator), then handed to
    transformers' `pipeline()`. `kwargs` (`device`, `batch_size`, `task_name`, ...) go to `pipeline()`."""
    from .predictor import MultiTaskPredictor

    predictor = MultiTaskPredictor.from_pretrained(
        model_name_or_path, allow_pickle=allow_pickle, revision=revision, token=token
    )
    return transformers_pipeline(PIPELINE_TASK, model=predictor.model, collator=predictor.collator, **kwargs)


AutoConfig.register(PIPELINE_TASK, MultiTaskPipelineConfig, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=MultiTaskPipeline, pt_model=MultiTaskBundleLoader, type="text"
)

__all__ = [
    "PIPELINE_TASK",
    "PIPELINE_CONFIG_NAME",
    "MultiTaskPipeline",
    "MultiTaskPipelineConfig",
    "MultiTaskBundleLoader",
    "load_pipeline",
    "write_pipeline_config",
]
