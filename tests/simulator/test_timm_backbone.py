"""Pretrained timm backbones from a local weights file: bit-identical loading (safetensors and torch
state dicts, checkpoint dicts), one-line errors (missing file, mismatched state dict, unknown model, no
timm), batched resizing, what `trainable` freezes, and a short continual run that leaves frozen
features exactly as loaded."""
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dncsim.common import DncsimError
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.models import TimmBody, TimmConfig, build_backbone, timm_stages
from dncsim.simulator.run import run

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

MODEL = "test_resnet"            # timm's smallest ResNet (0.37 M parameters), made for tests
SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised test_resnet saved as .safetensors and as a torch state dict (.pt)."""
    torch.manual_seed(123)
    net = timm.create_model(MODEL, pretrained=False, num_classes=0)
    with torch.no_grad():                        # non-trivial batch-norm buffers too
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    safetensors_torch.save_file(state, str(folder / "net.safetensors"))
    torch.save(state, folder / "net.pt")
    return {"state": state, "safetensors": folder / "net.safetensors", "pt": folder / "net.pt", "dir": folder}


def loaded(cfg: TimmConfig, shape=SHAPE):
    torch.manual_seed(0)                         # another init than the file's: loading must replace it
    return build_backbone(cfg, shape)


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_weights_load_bit_identically(weights, kind):
    net = loaded(TimmConfig(model=MODEL, weights=weights[kind]))
    got = net.body.net.state_dict()
    assert set(got) == set(weights["state"])
    assert all(torch.equal(got[k], weights["state"][k]) for k in got)
    assert net.feature_dim == timm.create_model(MODEL, num_classes=0).num_features == 96
    random = loaded(TimmConfig(model=MODEL)).body.net.state_dict()
    assert not torch.equal(random["conv1.0.weight"], weights["state"]["conv1.0.weight"])


def test_a_checkpoint_dict_loads_through_weights_key_and_prefix(weights):
    path = weights["dir"] / "ckpt.pt"
    torch.save({"epoch": 3, "teacher": {"module.backbone." + k: v for k, v in weights["state"].items()}}, path)
    net = loaded(TimmConfig(model=MODEL, weights=path, weights_key="teacher", weights_prefix="module.backbone."))
    got = net.body.net.state_dict()
    assert all(torch.equal(got[k], weights["state"][k]) for k in weights["state"])
    with pytest.raises(DncsimError, match=r"^backbone.weights: .* is not a state dict: entry 'epoch' is a int, not a "
                                          r"tensor; set backbone.weights_key to the entry that holds the weights "
                                          r"\(teacher\)$"):
        loaded(TimmConfig(model=MODEL, weights=path))
    with pytest.raises(DncsimError, match=r"^backbone.weights_key: .* has no entry 'teachr' \(did you mean 'teacher'"):
        loaded(TimmConfig(model=MODEL, weights=path, weights_key="teachr"))


def test_classifier_weights_of_the_file_are_left_out(weights):
    """A checkpoint of the model with its ImageNet classifier loads into the num_classes=0 model."""
    path = weights["dir"] / "with_fc.safetensors"
    safetensors_torch.save_file({**weights["state"], "fc.weight": torch.zeros(10, 96), "fc.bias": torch.zeros(10)},
                                str(path))
    got = loaded(TimmConfig(model=MODEL, weights=path)).body.net.state_dict()
    assert "fc.weight" not in got
    assert torch.equal(got["layer4.0.conv2.weight"], weights["state"]["layer4.0.conv2.weight"])


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("change,expected", [
    (lambda s: {k: v for k, v in s.items() if k != "layer2.0.bn1.weight"},
     "missing key 'layer2.0.bn1.weight' (1 missing, 0 unexpected of 90 keys)"),
    (lambda s: {**s, "layer9.weight": torch.zeros(1)}, "unexpected key 'layer9.weight' (0 missing, 1 unexpected of "
                                                       "90 keys)"),
    (lambda s: {"encoder." + k: v for k, v in s.items()},
     "missing key 'conv1.0.weight' (90 missing, 90 unexpected of 90 keys); set backbone.weights_prefix: 'encoder.'"),
    (lambda s: {**s, "conv1.0.weight": torch.zeros(3, 3, 3, 3)},
     "tensor 'conv1.0.weight' has shape [3, 3, 3, 3] in the file but [16, 3, 3, 3] in the model"),
], ids=["missing", "unexpected", "prefixed", "shape"])
def test_a_state_dict_of_another_architecture_is_one_line_naming_the_key(weights, tmp_path, change, expected):
    path = tmp_path / "bad.safetensors"
    safetensors_torch.save_file(change(weights["state"]), str(path))
    with pytest.raises(DncsimError) as info:
        loaded(TimmConfig(model=MODEL, weights=path))
    assert _one_line(info) == f"backbone.weights: {path} does not match timm model 'test_resnet': {expected}"


def test_missing_file_unknown_model_and_unreadable_file_are_one_line(tmp_path):
    with pytest.raises(DncsimError) as info:
        loaded(TimmConfig(model=MODEL, weights=tmp_path / "nowhere.safetensors"))
    assert _one_line(info).startswith(f"backbone.weights: {tmp_path / 'nowhere.safetensors'} does not exist")
    with pytest.raises(DncsimError) as info:
        loaded(TimmConfig(model="resnet19"))
    assert _one_line(info).startswith("backbone.model: 'resnet19' is not a timm model (did you mean 'resnet")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DncsimError) as info:
        loaded(TimmConfig(model=MODEL, weights=junk))
    assert _one_line(info).startswith(f"backbone.weights: cannot read {junk} as safetensors or a torch state dict")


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(DncsimError) as info:
        build_backbone(TimmConfig(model=MODEL), SHAPE)
    assert _one_line(info) == "backbone.name: 'timm' needs the timm package: pip install 'dncsim[timm]'"


def test_images_are_resized_and_normalised_per_batch_on_the_device():
    body = loaded(TimmConfig(model=MODEL, input_size=24), (1, 16, 16)).body
    assert isinstance(body, TimmBody)
    x = torch.rand(5, 1, 16, 16)
    prepared = body.prepare(x)
    assert prepared.shape == (5, 3, 24, 24) and prepared.device == x.device
    mean = torch.tensor(timm.create_model(MODEL).pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(timm.create_model(MODEL).pretrained_cfg["std"]).view(1, 3, 1, 1)
    resized = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(24, 24), mode="bilinear",
                                              align_corners=False)
    assert torch.allclose(prepared, (resized - mean) / std, atol=1e-6)
    raw = loaded(TimmConfig(model=MODEL, normalize=False), (3, 16, 16)).body
    assert torch.equal(raw.prepare(x.expand(-1, 3, -1, -1)), x.expand(-1, 3, -1, -1))      # nothing to do
    assert "mean" not in body.state_dict() and all(k.startswith("net.") for k in body.state_dict())


def test_head_only_freezes_the_whole_backbone_and_keeps_it_in_eval_mode(weights):
    net = loaded(TimmConfig(model=MODEL, weights=weights["pt"], trainable="head_only"))
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not any(m.training for m in net.body.net.modules())
    before = net(torch.rand(4, *SHAPE))
    assert torch.equal(net.body.net.bn1.running_mean, weights["state"]["bn1.running_mean"])   # no stats update
    assert before.shape == (4, 96)


def test_last_n_blocks_trains_the_last_stages_of_feature_info(weights):
    stages = timm_stages(timm.create_model(MODEL, num_classes=0))
    assert [s for s, _ in stages] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert stages[0][1][0] == "conv1.0.weight" and stages[0][1][-1] == "bn1.bias"     # the stem is stage 0
    net = loaded(TimmConfig(model=MODEL, weights=weights["pt"], trainable={"last_n_blocks": 2}))
    trained = {n.split(".")[2] for n, p in net.named_parameters() if p.requires_grad}
    assert trained == {"layer3", "layer4"}
    assert net.body.frozen == ("conv1", "bn1", "layer1", "layer2")
    net.train()
    assert not net.body.net.layer2.training and net.body.net.layer3.training
    loss = net(torch.rand(4, *SHAPE)).square().mean()
    loss.backward()
    assert all((p.grad is not None) == p.requires_grad for p in net.parameters())
    with pytest.raises(DncsimError, match=r"^backbone.trainable.last_n_blocks: 6 is more than the 5 stages of timm "
                                          r"model 'test_resnet' \(act1, layer1, layer2, layer3, layer4\)$"):
        loaded(TimmConfig(model=MODEL, trainable={"last_n_blocks": 6}))
    everything = loaded(TimmConfig(model=MODEL, trainable={"last_n_blocks": 5}))
    assert all(p.requires_grad for p in everything.parameters())


def test_trainable_is_validated_without_timm():
    with pytest.raises(DncsimError, match=r"^backbone.trainable: 'head' is not one of all, head_only, "):
        run_from_mapping({"backbone": {"name": "timm", "model": MODEL, "trainable": "head"}})
    with pytest.raises(DncsimError, match=r"^backbone.trainable: unknown key 'last_blocks' \(did you mean "):
        run_from_mapping({"backbone": {"name": "timm", "model": MODEL, "trainable": {"last_blocks": 2}}})
    with pytest.raises(DncsimError, match=r"^backbone.model: required key is missing$"):
        run_from_mapping({"backbone": {"name": "timm"}})


RUN = {"seed": 1,
       "scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 1, "probe_repeats": 2,
                               "test_repeats": 2},
                    "stream": {"type": "factor", "attributes": ["shape", "color"]}},
       "objective": {"name": "supervised"}, "training": {"epochs": 1, "batch_size": 48},
       "evaluation": {"linear_steps": 5}, "analysis": {"shots": [1], "episodes": 5, "bootstrap": 0},
       "output": {"report": False, "tensorboard": False}}


@pytest.mark.slow
def test_a_continual_run_on_shapes_keeps_frozen_pretrained_features_exactly(weights, tmp_path):
    backbone = {"name": "timm", "model": MODEL, "weights": str(weights["safetensors"]), "trainable": "head_only",
                "input_size": 24}
    out = run(run_from_mapping({**RUN, "backbone": backbone}), tmp_path / "run", quiet=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["experiences_done"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = [r for r in rows if r["metric"] == "acc" and r["exp"] == 1]
    assert len(acc) >= 2 and all(0 <= r["value"] <= 1 for r in acc)
    model = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    body = {k[len("backbone.body.net."):]: v for k, v in model.items() if k.startswith("backbone.body.net.")}
    assert set(body) == set(weights["state"])
    assert all(torch.equal(body[k], weights["state"][k]) for k in body)       # head_only: not one bit moved
    first, last = np.load(out / "geometry" / "row_000.npz"), np.load(out / "geometry" / "row_002.npz")
    means = [k for k in first.files if k.endswith("/means")]
    assert means and all(np.array_equal(first[k], last[k]) for k in means)    # the same features at every row


def test_the_cli_reports_a_bad_weights_file_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    (tmp_path / "cfg.json").write_text(json.dumps({**RUN, "backbone": {"name": "timm", "model": MODEL,
                                                                        "weights": "bad.safetensors"}}))
    assert main(["run", "cfg.json", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "backbone.weights: cannot read bad.safetensors" in err
    assert not (tmp_path / "run").exists()
