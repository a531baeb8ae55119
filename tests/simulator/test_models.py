"""Backbones: output shapes, feature_dim, seeded init, gradient flow, offline resnet18, config errors."""
import socket

import pydantic
import pytest
import torch
from torch import nn

from dncsim.common import DncsimError
from dncsim.simulator.models import (Backbone, BackboneConfig, ConvNetConfig, MLPConfig, ResNet18Config,
                              build_backbone)

IMAGE_SHAPES = [(3, 32, 32), (1, 28, 28), (1, 8, 8)]
CONFIGS = [MLPConfig(), ConvNetConfig(width=8), ResNet18Config()]


def _cases():
    for cfg in CONFIGS:
        for shape in IMAGE_SHAPES:
            yield cfg, shape
    yield MLPConfig(), (64,)


@pytest.mark.parametrize("cfg,shape", list(_cases()), ids=lambda v: getattr(v, "name", str(v)))
def test_output_is_batch_by_feature_dim(cfg, shape):
    torch.manual_seed(0)
    net = build_backbone(cfg, shape)
    out = net(torch.rand(3, *shape))
    assert isinstance(net, Backbone)
    assert out.shape == (3, cfg.feature_dim) == (3, net.feature_dim)
    assert net.input_shape == shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cfg", [MLPConfig(hidden=[32], feature_dim=16), MLPConfig(hidden=[], feature_dim=5),
                                 ConvNetConfig(width=4, feature_dim=7), ResNet18Config(feature_dim=64)],
                         ids=lambda c: f"{c.name}-{c.feature_dim}")
def test_feature_dim_is_honoured(cfg):
    net = build_backbone(cfg, (1, 8, 8))
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, cfg.feature_dim)


def test_mlp_without_batchnorm_has_none():
    net = build_backbone(MLPConfig(hidden=[8, 8], batchnorm=False), (10,))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    assert sum(isinstance(m, nn.BatchNorm1d) for m in build_backbone(MLPConfig(), (10,)).modules()) == 2


@pytest.mark.parametrize("shape,pools", [((3, 32, 32), 4), ((1, 8, 8), 3), ((1, 2, 2), 1)])
def test_convnet_pools_only_while_the_image_allows(shape, pools):
    net = build_backbone(ConvNetConfig(width=4), shape)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == pools
    assert net(torch.rand(2, *shape)).shape == (2, 128)


def test_resnet18_has_cifar_stem_and_takes_the_data_channels():
    net = build_backbone(ResNet18Config(), (1, 28, 28))
    conv1 = net.body.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(net.body.maxpool, nn.Identity) and isinstance(net.body.fc, nn.Identity)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_init_is_deterministic_under_a_seed(cfg):
    def weights(seed):
        torch.manual_seed(seed)
        return build_backbone(cfg, (3, 16, 16)).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("cfg,shape", [(MLPConfig(hidden=[16, 16], feature_dim=8), (20,)),
                                       (ConvNetConfig(width=4, feature_dim=8), (3, 16, 16)),
                                       (ResNet18Config(feature_dim=8), (1, 8, 8))],
                         ids=lambda v: getattr(v, "name", ""))
def test_gradients_reach_every_parameter(cfg, shape):
    torch.manual_seed(0)
    net = build_backbone(cfg, shape)
    loss = (net(torch.rand(4, *shape)) - torch.randn(4, cfg.feature_dim)).pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_resnet18_builds_without_network_access(monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert build_backbone(ResNet18Config(), (3, 32, 32))(torch.rand(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("cfg", [ConvNetConfig(), ResNet18Config()], ids=lambda c: c.name)
def test_convolutional_backbones_on_vectors_fail_in_one_line(cfg):
    with pytest.raises(DncsimError) as info:
        build_backbone(cfg, (64,))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"backbone.name: '{cfg.name}' needs image inputs (C, H, W)")
    assert "(64,)" in msg and "mlp" in msg


def test_input_shape_of_other_rank_fails_in_one_line():
    with pytest.raises(DncsimError, match=r"^backbone: inputs must be images .* got shape \(3, 4\)$"):
        build_backbone(MLPConfig(), (3, 4))


def test_backbone_config_union_picks_the_named_class():
    adapter = pydantic.TypeAdapter(BackboneConfig)
    assert adapter.validate_python({"name": "convnet", "width": 16}) == ConvNetConfig(width=16)
    assert isinstance(adapter.validate_python({"name": "resnet18"}), ResNet18Config)
    assert adapter.validate_python({"name": "mlp", "hidden": [8]}).hidden == [8]


@pytest.mark.parametrize("data", [{"name": "vgg"}, {"name": "mlp", "hiden": [8]}, {"name": "mlp", "hidden": ["a"]},
                                  {"name": "mlp", "hidden": [0]}, {"name": "convnet", "width": "wide"},
                                  {"name": "convnet", "feature_dim": 0}, {"name": "resnet18", "width": 8},
                                  {"name": "mlp", "batchnorm": "maybe"}, {"width": 8}])
def test_bad_configs_raise_validation_errors(data):
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(BackboneConfig).validate_python(data)
