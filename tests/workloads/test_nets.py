"""The real workloads' networks: parameter counts against their sources, shapes, and the details that
make them the sources' networks (TensorFlow "same" pooling, zeroed residual BatchNorms, tied GPT
embeddings, causal attention, dropout only in training)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from hessian_lr.workloads.cnn3c3d import ThreeC3D
from hessian_lr.workloads.gpt import CONFIGS, GPT, GPTConfig
from hessian_lr.workloads.resnet import ResNet18


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_has_algoperfs_11_17m_parameters_and_maps_images_to_logits():
    torch.manual_seed(0)
    model = ResNet18()
    assert _count(model) == 11_173_962
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 0
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)


def test_resnet18_starts_each_block_as_the_identity_and_reads_out_small():
    torch.manual_seed(0)
    model = ResNet18()
    assert all(float(block.bn2.weight.detach().abs().sum()) == 0 for stage in (model.layer1, model.layer2)
               for block in stage)
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    conv = model.layer3[0].conv1.weight.detach()  # fan-in 128·9: LeCun normal
    assert float(conv.std()) == pytest.approx(math.sqrt(1 / (128 * 9)) / 0.8796, rel=0.05)


def test_resnet18_updates_batchnorm_statistics_in_training_mode_only():
    torch.manual_seed(0)
    model = ResNet18()
    before = model.bn1.running_mean.clone()
    model.eval()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32) + 1)
    assert torch.equal(model.bn1.running_mean, before)
    model.train()
    model(torch.randn(4, 3, 32, 32) + 1)
    assert not torch.equal(model.bn1.running_mean, before)


def test_3c3d_has_deepobs_layer_sizes():
    model = ThreeC3D()
    # conv 3·64·25+64, conv 64·96·9+96, conv 96·128·9+128, dense 1152·512+512, 512·256+256, 256·10+10
    assert _count(model) == 4_864 + 55_392 + 110_720 + 590_336 + 131_328 + 2_570 == 895_210
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [p.shape for p in model.weights()] == [m.weight.shape for m in (
        model.conv1, model.conv2, model.conv3, model.dense1, model.dense2, model.dense3)]


@pytest.mark.parametrize("size", [28, 12, 6])  # the even sizes the network pools
def test_3c3d_pooling_equals_tensorflows_same_padding(size):
    """TF "same": output ceil(n/2); pad total max((out-1)·2+3-n, 0), the odd pixel at the end."""
    x = torch.randn(2, 5, size, size)
    out_size = math.ceil(size / 2)
    pad = max((out_size - 1) * 2 + 3 - size, 0)
    padded = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-math.inf)
    expected = torch.nn.functional.max_pool2d(padded, 3, 2)
    assert torch.equal(ThreeC3D().pool(x), expected)


def test_3c3d_works_under_functional_call():
    torch.manual_seed(0)
    model = ThreeC3D()
    x = torch.randn(4, 3, 32, 32)
    params = {name: p.detach() * 0.5 for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.data.mul_(0.5)
    assert torch.equal(functional_call(ThreeC3D(), params, (x,)), model(x))


def _gpt(size: str, vocab: int = 65, **changes) -> GPT:
    return GPT(GPTConfig(vocab_size=vocab, **{**CONFIGS[size], **changes}))


def test_the_reference_gpt_has_nanogpts_10_65m_parameters():
    torch.manual_seed(0)
    model = _gpt("reference")
    # nanoGPT prints "number of parameters: 10.65M" for shakespeare_char (position embeddings left out)
    assert model.num_parameters(include_positions=False) == 10_646_784
    assert round(model.num_parameters(include_positions=False) / 1e6, 2) == 10.65
    assert model.num_parameters() == _count(model) == 10_646_784 + 256 * 384
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.context) == (6, 6, 384, 256)
    assert model.config.dropout == 0.2 and not model.config.bias


def test_the_cpu_gpt_is_nanogpts_readme_configuration():
    model = _gpt("cpu")
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.context) == (4, 4, 128, 64)
    assert model.config.dropout == 0.0
    # per block 12·128² weights + 2·128 LayerNorm weights; embedding 65·128; final LayerNorm 128
    assert model.num_parameters(include_positions=False) == 4 * (12 * 128**2 + 256) + 65 * 128 + 128 == 795_904
    assert model(torch.randint(0, 65, (2, 64))).shape == (2, 64, 65)


def test_the_gpt_ties_its_embedding_to_its_read_out_and_scales_the_residual_projections():
    torch.manual_seed(0)
    model = _gpt("cpu")
    assert model.wte.weight is model.lm_head.weight
    assert float(model.h[0].attn.c_attn.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert float(model.h[0].mlp.c_proj.weight.detach().std()) == pytest.approx(0.02 / math.sqrt(8), rel=0.05)


def test_the_gpt_is_causal():
    torch.manual_seed(0)
    model = _gpt("cpu").eval()
    tokens = torch.randint(0, 65, (1, 20))
    changed = tokens.clone()
    changed[0, 12] = (tokens[0, 12] + 1) % 65
    a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :12], b[:, :12]) and not torch.allclose(a[:, 12:], b[:, 12:])


def test_gpt_dropout_acts_in_training_mode_only():
    torch.manual_seed(0)
    model = _gpt("cpu", dropout=0.2)
    tokens = torch.randint(0, 65, (2, 16))
    model.eval()
    assert torch.equal(model(tokens), model(tokens))
    model.train()
    assert not torch.equal(model(tokens), model(tokens))


def test_gpt_works_under_functional_call_with_its_tied_matrix():
    torch.manual_seed(0)
    model = _gpt("cpu").eval()
    tokens = torch.randint(0, 65, (2, 10))
    params = dict(model.named_parameters())
    assert "wte.weight" in params and "lm_head.weight" not in params  # one tensor, one name
    assert torch.equal(functional_call(model, params, (tokens,)), model(tokens))


def test_a_sequence_longer_than_the_context_is_refused():
    with pytest.raises(ValueError, match="longer than the context 64"):
        _gpt("cpu")(torch.zeros(1, 65, dtype=torch.long))


def test_a_gpt_shape_that_does_not_split_into_heads_is_refused():
    with pytest.raises(ValueError, match=r"n_embd \(100\) must be a multiple of n_head \(3\)"):
        GPTConfig(context=8, vocab_size=5, n_layer=1, n_head=3, n_embd=100)
