"""Uniform model soup (`hf-pals soup`, `hf_pals.soup.uniform_soup`): the tensor-wise mean of bundles, a
normal bundle that predicts, and mismatching bundles refused with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from hf_pals import PALConfig
from hf_pals.cli import main
from hf_pals.modeling import MultiTaskModel
from hf_pals.predictor import MultiTaskPredictor
from hf_pals.soup import SOUP_RECORD_NAME, SoupError, uniform_soup
from hf_pals.tasks import cs224n_task

TEXTS = ["a good fun film", "boring slow plot"]
PAIRS = [("good film", "great film"), ("rice cook", "sad music")]


def _bundle(tiny_base, path: Path, seed: int, tasks=None, noise: float = 0.02, **sst) -> Path:
    """A tiny bundle whose every weight is random (seeded), with the tokenizer (SST and siamese STS unless
    `tasks` says otherwise; test_ensemble uses it too)."""
    torch.manual_seed(seed)
    tasks = tasks or {"sst": cs224n_task("sst", **sst), "sts": cs224n_task("sts", pair_encoding="siamese", head="cosine")}
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
    model.save_pretrained(str(path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    return path


@pytest.fixture(scope="module")
def bundles(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return [_bundle(tiny_base, root / f"seed-{s}", seed=s) for s in (1, 2)]


def _tensors(bundle: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a bundle's weights files, keyed by file and name."""
    out = {}
    for path in sorted(bundle.glob("**/*.safetensors")):
        out.update({f"{path.relative_to(bundle)}:{k}": v for k, v in load_file(path).items()})
    return out


def _predict(bundle: Path):
    predictor = MultiTaskPredictor.from_pretrained(str(bundle))
    return predictor.predict("sst", TEXTS), predictor.predict("sts", PAIRS)


@pytest.mark.one_thread
def test_soup_of_two_is_the_mean_tensor_for_tensor_and_predicts(bundles, tmp_path):
    out = tmp_path / "soup"
    result = uniform_soup(bundles, out)
    a, b, soup = _tensors(bundles[0]), _tensors(bundles[1]), _tensors(out)
    assert set(soup) == set(a) and len(soup) > 10
    assert any(k.startswith("encoder/") for k in soup) and any(k.startswith("adapters/sts/") for k in soup)
    for key, value in soup.items():
        assert torch.equal(value, ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)), key
        assert not torch.equal(value, a[key]), key
    for name in ("hf_pals_config.json", "config.json", "tokenizer_config.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "hf_pals_config.json").read_text())["tasks"] == json.loads(
        (bundles[0] / "hf_pals_config.json").read_text()
    )["tasks"]
    adapter_config = json.loads((out / "adapters" / "sst" / "adapter_config.json").read_text())
    assert adapter_config == json.loads((bundles[0] / "adapters" / "sst" / "adapter_config.json").read_text())
    record = json.loads((out / SOUP_RECORD_NAME).read_text())
    assert record["method"] == "uniform" and [i["path"] for i in record["ingredients"]] == [str(b) for b in bundles]
    assert result["output_dir"] == str(out)
    sst, sts = _predict(out)
    assert len(sst) == 2 and len(sts) == 2 and all(0 <= p["label"] < 5 for p in sst)
    assert not list(tmp_path.glob(".soup-*"))  # the staging folder is gone


@pytest.mark.one_thread
def test_soup_of_one_is_the_bundle(bundles, tmp_path):
    out = tmp_path / "one"
    uniform_soup([bundles[0]], out)
    original, soup = _tensors(bundles[0]), _tensors(out)
    assert set(soup) == set(original)
    for key, value in soup.items():
        assert torch.equal(value, original[key]), key
    assert _predict(out) == _predict(bundles[0])


def _copy(bundle: Path, target: Path) -> Path:
    shutil.copytree(bundle, target)
    return target


@pytest.mark.one_thread
def test_mismatching_bundles_are_refused_and_nothing_is_written(bundles, tiny_base, tmp_path):
    out = tmp_path / "soup"
    other_labels = _bundle(tiny_base, tmp_path / "labels", seed=3, num_labels=3)
    with pytest.raises(SoupError, match=r"labels: hf_pals_config.json field tasks.sst.num_labels differs .*\(3 vs 5\)"):
        uniform_soup([bundles[0], other_labels], out)

    adapter = _copy(bundles[1], tmp_path / "adapter")
    config_path = adapter / "adapters" / "sst" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "pal_num_heads": 3}))
    message = r"adapter: the adapter config of task 'sst' differs .* at adapter_config.pal_num_heads"
    with pytest.raises(SoupError, match=message):
        uniform_soup([bundles[0], adapter], out)

    shapes = _copy(bundles[1], tmp_path / "shapes")
    heads = load_file(shapes / "heads.safetensors")
    heads["sst.classifier.bias"] = torch.zeros(7)
    save_file(heads, str(shapes / "heads.safetensors"))
    message = r"shapes: tensor heads.safetensors:sst.classifier.bias has shape \(7,\), .* has \(5,\)"
    with pytest.raises(SoupError, match=message):
        uniform_soup([bundles[0], shapes], out)

    extra = _copy(bundles[1], tmp_path / "extra")
    heads = load_file(extra / "heads.safetensors")
    heads["sst.extra"] = torch.zeros(2)
    save_file(heads, str(extra / "heads.safetensors"))
    with pytest.raises(SoupError, match=r"extra: tensor heads.safetensors:sst.extra has shape \(2,\), .* has missing"):
        uniform_soup([bundles[0], extra], out)

    with pytest.raises(SoupError, match="is given twice"):
        uniform_soup([bundles[0], bundles[0]], out)
    with pytest.raises(FileNotFoundError, match="not a hf_pals model directory"):
        uniform_soup([bundles[0], tmp_path / "nowhere"], out)
    assert not out.exists()
    assert not list(tmp_path.glob(".soup-*"))


def test_an_existing_output_dir_is_refused(bundles, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SoupError, match="already exists and is not empty"):
        uniform_soup(bundles, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.one_thread
def test_cli_soup(bundles, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["soup", *map(str, bundles), "--output-dir", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["ingredients"][1]["path"] == str(bundles[1])
    assert (out / "heads.safetensors").exists()
    assert main(["soup", str(bundles[0]), str(bundles[0]), "--output-dir", str(tmp_path / "no")]) == 2
    assert "is given twice" in capsys.readouterr().err
