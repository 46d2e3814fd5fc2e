"""The adapter benchmark runs end to end on a tiny base and its figures are consistent with each other
(the timings themselves are only meaningful from `hf-pals bench` on a quiet machine, never in tests)."""

from __future__ import annotations

import pytest

from hf_pals.benchmarks import adapters
from hf_pals.benchmarks.common import paired_ratio

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_adapter_benchmark_reports_every_candidate_and_consistent_ratios(tiny_base, data_dir):
    result = adapters.run(str(data_dir), tiny_base, batch_size=4, max_length=16, repeats=1)
    steps = result["train_step_seconds"]
    assert set(steps) == set(adapters.CANDIDATES) and all(t > 0 for t in steps.values())
    assert result["ratios"]["pal_over_full_finetune"] == pytest.approx(steps["pal"] / steps["full_finetune"], rel=0.05)  # step times are rounded
    fast = result["ratios"]["fast_dropout/full_finetune_over_torch_dropout"]
    assert fast == pytest.approx(steps["full_finetune_fast_dropout"] / steps["full_finetune"], rel=0.05)
    trainable = result["trainable_parameters"]
    assert trainable["pal_frozen_encoder"] < trainable["full_finetune"] < trainable["pal"]
    for name in ("full_finetune", "pal", "pal_frozen_encoder"):  # the same models, only the dropout differs
        assert trainable[name + "_fast_dropout"] == trainable[name]
    assert result["targets_met"]["pal_over_full_finetune"] == (result["ratios"]["pal_over_full_finetune"] <= 1.10)
    assert set(result["peak_memory_growth_mib"]) == set(adapters.CANDIDATES)
    mixed = result["mixed_task_inference"]
    assert mixed["mixed_over_single_throughput"] == pytest.approx(
        mixed["rows_per_s_mixed_task_batch"] / mixed["rows_per_s_single_task_batches"], rel=0.02
    )
    assert mixed["mixed_over_same_size_single_task"] == pytest.approx(
        mixed["rows_per_s_mixed_task_batch"] / mixed["rows_per_s_one_task_batch_of_the_same_size"], rel=0.02
    )


def test_bert_base_architecture_is_the_papers_model():
    """`--architecture bert-base` is BERT-base's shape (transformers' BertConfig defaults), on which a
    task's PALs have the paper's 1,819,836 parameters (d_s = 204), and the CLI offers what the module has."""
    from transformers import BertConfig

    from hf_pals.cli import _parser
    from hf_pals.tuner import PALConfig

    shape = adapters.ARCHITECTURES["bert-base"]
    defaults = BertConfig()
    assert shape == {key: getattr(defaults, key) for key in shape}
    assert PALConfig().parameter_count(shape["hidden_size"], shape["num_hidden_layers"]) == 1_819_836
    bench = _parser()._subparsers._group_actions[0].choices["bench"]
    choices = next(a.choices for a in bench._actions if a.dest == "architecture")
    assert sorted(choices) == sorted(adapters.ARCHITECTURES)


def test_random_weights_encoder_has_the_shape_and_the_base_tokenizer(tiny_base, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    shape = {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
    path = adapters.random_weights_encoder(tiny_base, shape, str(tmp_path))
    model = AutoModel.from_pretrained(path)
    assert {key: getattr(model.config, key) for key in shape} == shape
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(tiny_base))
    text = "a question about paraphrases"
    assert AutoTokenizer.from_pretrained(path)(text)["input_ids"] == AutoTokenizer.from_pretrained(tiny_base)(text)["input_ids"]


def test_unknown_architecture_is_refused_with_the_choices(tiny_base, data_dir):
    with pytest.raises(ValueError, match="unknown architecture 'bert-huge'; choose from bert-base"):
        adapters.run(str(data_dir), tiny_base, architecture="bert-huge")


def test_paired_ratio_is_the_median_of_side_by_side_ratios():
    """Two rounds where the machine is slow for both candidates give side-by-side ratios of 1.1; one round
    where "pal" ran in a fast phase alone gives 0.4. The paired ratio says 1.1; the ratio of the medians
    (1.2 / 3.0) would say 0.4."""
    times = {"pal": [1.1, 3.3, 1.2], "full": [1.0, 3.0, 3.0]}
    assert paired_ratio(times, "pal", "full") == pytest.approx(1.1)
    assert paired_ratio(times, "full", "pal") == pytest.approx(1 / 1.1)


def test_step_clock_counts_everything_after_the_last_backward_as_the_optimizer():
    """Gradient clipping runs between the last backward and `on_pre_optimizer_step`: it must land in the
    optimizer's share, not in the "outside" overhead."""
    import time
    from types import SimpleNamespace

    from hf_pals.benchmarks.trainer import StepClock

    clock = StepClock(warmup=0)
    state = SimpleNamespace(global_step=1)
    clock.compute_ended = time.perf_counter()
    time.sleep(0.02)  # stands for clipping
    clock.on_pre_optimizer_step(None, state, None)
    clock.on_optimizer_step(None, state, None)
    assert len(clock.optimizer) == 1 and clock.optimizer[0] >= 0.02
