"""SmallCNN's one-channel first convolution: the same function and gradients as ``nn.Conv2d``, only faster where
only the input gradient is wanted (the frozen copy that training attacks differentiate)."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.attacks.base import fold_batchnorm
from neokd_bench.models.smallcnn import OneChannelConv2d, _OneChannelConvFn
from torch import nn


def test_the_function_passes_gradcheck_with_and_without_bias():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 6, 7, dtype=torch.double, generator=g, requires_grad=True)
    w = torch.randn(3, 1, 3, 2, dtype=torch.double, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.double, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _OneChannelConvFn.apply(x, w, b), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: _OneChannelConvFn.apply(x, w, None), (x, w))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_frozen_copy_gives_nn_conv2ds_output_and_input_gradient(layout):
    torch.manual_seed(0)
    fast = nn.Sequential(OneChannelConv2d(1, 32, 3), nn.ReLU()).to(memory_format=layout)
    ref = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU()).to(memory_format=layout)
    ref.load_state_dict(fast.state_dict())  # the same parameters and state-dict keys
    fast, ref = fold_batchnorm(fast), fold_batchnorm(ref)  # frozen, as training attacks see them
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=layout)
    seed = torch.randn(16, 32, 26, 26).contiguous(memory_format=layout)  # both layouts of the incoming gradient
    grads = []
    for model in (fast, ref):
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        grads.append((out, *torch.autograd.grad((out * seed).sum(), [xg])))
        conv_node = out.grad_fn.next_functions[0][0]  # the node that made ReLU's input
        assert (type(conv_node).__name__ == "_OneChannelConvFnBackward") == (model is fast)
    (o1, g1), (o2, g2) = grads
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_trainable_weights_take_the_ordinary_path_and_get_the_same_gradients():
    torch.manual_seed(0)
    fast, ref = OneChannelConv2d(1, 8, 3), nn.Conv2d(1, 8, 3)
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(4, 1, 10, 10, requires_grad=True)
    out = fast(x)
    assert type(out.grad_fn).__name__ != "_OneChannelConvFnBackward"  # weights train: PyTorch's own conv
    out.square().sum().backward()
    ref(x.detach()).square().sum().backward()
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad)
    torch.testing.assert_close(fast.bias.grad, ref.bias.grad)


def test_smallcnn_uses_it_for_one_channel_only_and_attacks_agree_with_the_plain_model():
    assert isinstance(nb.create_model("smallcnn").block1[0], OneChannelConv2d)
    assert type(nb.create_model("smallcnn", in_chans=3).block1[0]) is nn.Conv2d
    torch.manual_seed(0)
    model = nb.create_model("smallcnn").eval()
    plain = nb.create_model("smallcnn").eval()
    plain.block1[0] = nn.Conv2d(1, 32, 3)
    plain.load_state_dict(model.state_dict())
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    attack = nb.create_attack("pgd", eps=0.1, step_size=0.025, steps=5, objective="max-average", seed=0,
                              fold_bn=True)
    a, b = attack(model, x, y), attack(plain, x, y)
    # the same attack up to float rounding: a sign-gradient step may flip only where a component is ~0
    assert float((a - b).abs().gt(1e-4).float().mean()) < 0.01
