"""Publishing: the exact upload folder, the model card's metadata, and the push (no network: HfApi's
create_repo/create_branch/upload_folder are replaced by recorders that check arguments against the real
signatures and snapshot the folder as it is at upload time)."""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoTokenizer

from hf_pals import MultiTaskModel, PALConfig, hub
from hf_pals.cli import main
from hf_pals.tasks import cs224n_task

REPO = Path(__file__).resolve().parents[1]
REPORT = {
    "sst": {"accuracy": 0.41},
    "quora": {"accuracy": 0.77},
    "sts": {"pearson": 0.52},
    "overall": 0.6833,
    "split": "dev",
    "trainable_parameters": 1234,
}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}


pytestmark = pytest.mark.one_thread  # small models: one torch thread is faster and deterministic


def _model(base, freeze_encoder):
    torch.manual_seed(0)
    tasks = [cs224n_task("sst"), cs224n_task("quora"), cs224n_task("sts", pair_encoding="siamese", head="cosine")]
    return MultiTaskModel.from_base(base, tasks, PALConfig(), freeze_encoder=freeze_encoder)


@pytest.fixture(scope="module", params=[False, True], ids=["joint", "frozen"])
def run_dir(request, tiny_base, tmp_path_factory):
    """A training output dir: the bundle plus what a run leaves that must not be uploaded."""
    out = tmp_path_factory.mktemp("run")
    model = _model(tiny_base, request.param)
    model.save_pretrained(str(out), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    (out / "eval_results.json").write_text(json.dumps(REPORT))
    model.save_pretrained(str(out / "checkpoint-8"))
    for junk in ("checkpoint-8/optimizer.pt", "checkpoint-8/scheduler.pt", "checkpoint-8/rng_state.pth",
                 "training_args.bin", "weights.pkl", "predictions/sst-test-output.csv", "runs/events.out"):
        (out / junk).parent.mkdir(parents=True, exist_ok=True)
        (out / junk).write_bytes(b"\x80\x04not uploaded")
    return out


def _expected_files(freeze_encoder: bool) -> set[str]:
    files = {"README.md", "hf_pals_config.json", "heads.safetensors", "eval_results.json", *TOKENIZER_FILES}
    for task in ("sst", "quora", "sts"):
        files |= {f"adapters/{task}/adapter_config.json", f"adapters/{task}/adapter_model.safetensors"}
    if not freeze_encoder:
        files |= {"encoder/config.json", "encoder/model.safetensors"}
    return files


def _tree(folder) -> set[str]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _frozen(run_dir) -> bool:
    return json.loads((run_dir / "hf_pals_config.json").read_text())["freeze_encoder"]


def test_upload_folder_holds_exactly_the_bundle(run_dir, tmp_path):
    folder = hub.prepare_upload_folder(str(run_dir), str(tmp_path / "up"), repo_id="user/tiny-pals")
    assert _tree(folder) == _expected_files(_frozen(run_dir))
    for rel in _tree(folder) - {"README.md"}:
        assert (Path(folder) / rel).read_bytes() == (run_dir / rel).read_bytes(), rel
    # The uploaded folder is itself a bundle that loads.
    assert MultiTaskModel.from_pretrained(folder).tasks.keys() == {"sst", "quora", "sts"}


def test_upload_folder_must_be_new_or_empty(run_dir, tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "stale.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty"):
        hub.prepare_upload_folder(str(run_dir), str(tmp_path / "up"))


def test_model_card_metadata_and_text(run_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(run_dir, bundle)
    config = json.loads((bundle / "hf_pals_config.json").read_text())
    config["base_model_name_or_path"] = "sentence-transformers/all-MiniLM-L6-v2"  # as a real run records it
    (bundle / "hf_pals_config.json").write_text(json.dumps(config))

    card = hub.model_card(str(bundle), repo_id="user/tiny-pals", datasets={"sts": "sentence-transformers/stsb"})
    again = ModelCard(str(card))  # what the Hub parses from README.md
    data = again.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.library_name == "peft"
    assert data.tags == ["pals", "peft", "multi-task", "bert"]
    assert data.datasets == ["nyu-mll/glue", "sentence-transformers/stsb", "stanfordnlp/sst"]
    assert data.model_name == "tiny-pals"
    results = {(r.task_name, r.metric_type): r for r in data.eval_results}
    assert {k: r.metric_value for k, r in results.items()} == {
        ("sst", "accuracy"): 0.41,
        ("quora", "accuracy"): 0.77,
        ("sts", "pearsonr"): 0.52,
    }
    assert results[("sst", "accuracy")].dataset_type == "stanfordnlp/sst"
    assert results[("quora", "accuracy")].dataset_config == "qqp"
    assert results[("sts", "pearsonr")].dataset_type == "sentence-transformers/stsb"
    assert results[("sts", "pearsonr")].task_type == "sentence-similarity"
    assert all(r.dataset_split == "dev" for r in results.values())

    text = again.text
    assert "| `sst` | classification (5 classes) |" in text and "accuracy 0.4100" in text
    assert "Overall score (dev): **0.6833**" in text
    assert 'MultiTaskPredictor.from_pretrained("user/tiny-pals")' in text
    if _frozen(run_dir):
        assert 'AutoModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")' in text
    else:
        assert 'AutoModel.from_pretrained("user/tiny-pals", subfolder="encoder")' in text
    assert "{{" not in text and "{%" not in text


def test_card_of_a_local_base_and_no_report(run_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(run_dir, bundle, ignore=shutil.ignore_patterns("eval_results.json"))
    data = ModelCard(str(hub.model_card(str(bundle)))).data
    assert data.base_model is None  # a local path is not a Hub id
    assert data.eval_results is None and data.library_name == "peft"
    with pytest.raises(ValueError, match="task 'mnli'"):
        hub.model_card(str(bundle), datasets={"mnli": "nyu-mll/glue"})


def test_template_has_one_source_of_truth():
    """The template ships in the package; model_cards/ at the repository root links to that file."""
    assert hub.MODEL_CARD_TEMPLATE.is_file()
    top = REPO / "model_cards" / "hf_pals_model_card.md"
    assert top.exists() and os.path.samefile(top, hub.MODEL_CARD_TEMPLATE)
    from hf_pals import run

    assert hub.EVAL_RESULTS_NAME == run.REPORT_NAME


class HubRecorder:
    """Stands in for the Hub: records HfApi calls (checked against the real signatures) and what the
    upload folder holds when `upload_folder` is called."""

    def __init__(self, monkeypatch):
        self.calls = []
        self.uploaded: dict[str, bytes] = {}
        for name in ("create_repo", "create_branch", "upload_folder"):
            monkeypatch.setattr(HfApi, name, self._recorder(name, getattr(HfApi, name)))

    def _recorder(self, name, real):
        signature = inspect.signature(real)

        def record(api, *args, **kwargs):
            bound = signature.bind(api, *args, **kwargs).arguments  # a wrong argument fails here
            bound.pop("self")
            self.calls.append((name, bound, api.token))
            if name == "upload_folder":
                folder = Path(bound["folder_path"])
                self.uploaded = {rel: (folder / rel).read_bytes() for rel in _tree(folder)}
                return type("CommitInfo", (), {"commit_url": f"https://hub.test/{bound['repo_id']}/commit/1"})()

        return record

    def call(self, name):
        return [bound for n, bound, _ in self.calls if n == name]


def test_cli_push_uploads_the_folder(run_dir, monkeypatch, capsys):
    hub_ = HubRecorder(monkeypatch)
    code = main(["push", str(run_dir), "user/tiny-pals", "--private", "--token", "hf_x", "--revision", "v1",
                 "--dataset", "sts=sentence-transformers/stsb"])
    assert code == 0
    assert [n for n, _, _ in hub_.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert all(token == "hf_x" for _, _, token in hub_.calls)
    assert hub_.call("create_repo")[0] == {"repo_id": "user/tiny-pals", "private": True, "exist_ok": True, "repo_type": "model"}
    assert hub_.call("create_branch")[0]["branch"] == "v1"
    upload = hub_.call("upload_folder")[0]
    assert upload["repo_id"] == "user/tiny-pals" and upload["revision"] == "v1"
    assert upload["delete_patterns"] == ["adapters/*", "encoder/*"]
    assert set(hub_.uploaded) == _expected_files(_frozen(run_dir))
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) or "checkpoint" in name for name in hub_.uploaded)
    assert hub_.uploaded["heads.safetensors"] == (run_dir / "heads.safetensors").read_bytes()
    card = ModelCard(hub_.uploaded["README.md"].decode())
    assert card.data.library_name == "peft" and "sentence-transformers/stsb" in card.data.datasets
    out = json.loads(capsys.readouterr().out)
    assert out == {"repo_id": "user/tiny-pals", "revision": "v1", "commit_url": "https://hub.test/user/tiny-pals/commit/1"}


def test_cli_push_without_options_and_bad_dataset(run_dir, monkeypatch):
    hub_ = HubRecorder(monkeypatch)
    assert main(["push", str(run_dir), "user/tiny-pals"]) == 0
    assert [n for n, _, _ in hub_.calls] == ["create_repo", "upload_folder"]  # no branch without --revision
    assert hub_.call("create_repo")[0]["private"] is None  # the Hub's default visibility
    assert hub_.call("upload_folder")[0]["revision"] is None
    assert main(["push", str(run_dir), "user/tiny-pals", "--dataset", "stsb"]) == 2


def test_cli_push_refuses_a_pickle_only_bundle(run_dir, tmp_path, monkeypatch, capsys):
    hub_ = HubRecorder(monkeypatch)
    bundle = tmp_path / "bundle"
    shutil.copytree(run_dir, bundle)
    (bundle / "heads.safetensors").rename(bundle / "heads.bin")
    assert main(["push", str(bundle), "user/tiny-pals"]) == 2
    assert "heads.bin is a pickle file" in capsys.readouterr().err
    assert hub_.calls == []  # nothing reached the Hub


def test_model_push_to_hub(tiny_base, monkeypatch):
    hub_ = HubRecorder(monkeypatch)
    model = _model(tiny_base, freeze_encoder=True)
    info = model.push_to_hub(
        "user/tiny-pals", tokenizer=AutoTokenizer.from_pretrained(tiny_base), eval_results=REPORT, private=True
    )
    assert info.commit_url.endswith("/commit/1")
    assert set(hub_.uploaded) == _expected_files(freeze_encoder=True)
    assert json.loads(hub_.uploaded["eval_results.json"]) == REPORT
    assert hub_.call("create_repo")[0]["private"] is True
