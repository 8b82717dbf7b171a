"""Fixtures for the evaluation tests: a SmallCNN clean-trained for a few seconds on the bundled (real)
Fashion-MNIST subset, so that most test samples are classified correctly by every exit."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def clean_smallcnn(fmnist):
    """``(model in eval mode, x_test[:256], y_test[:256])``: SmallCNN, 3 epochs of plain SGD on 2,048
    training images (sum of the exits' cross-entropies), seed 0. About 6 s on an idle 2-core CPU."""
    import neokd_bench as nb

    from ..conftest import pinned_state

    with pinned_state(0):  # the same model whichever test asks first, whatever thread count it left
        model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std))
        x, y = fmnist.train.subset(2048).tensors()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.train()
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            perm = torch.randperm(len(y), generator=g)
            for s in range(0, len(y), 128):
                idx = perm[s:s + 128]
                loss = sum(torch.nn.functional.cross_entropy(o, y[idx]) for o in model(x[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    xt, yt = fmnist.test.tensors()
    return model, xt[:256], yt[:256]
