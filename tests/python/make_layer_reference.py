#!/usr/bin/env python3
"""Writes PyTorch's numbers for the layer kinds added with the network plan, checked by
tests/reference.rs, into tests/fixtures/reference:

gelu_avgpool_adam.safetensors: GELU and average pooling, in the digits config

The network is the digits config
    {"arch": "cnn", "conv": [{"channels": 4, "kernel": 3, "padding": 1, "pool": "average"},
                             {"channels": 8, "kernel": 3, "padding": 1, "pool": "max"}],
     "batch_norm": false, "hidden": [16], "activation": "gelu", "dropout": 0.0}
trained with Adam(lr=0.01);

tanh_sgd.safetensors: tanh, in the MLP {"arch": "mlp", "hidden": [32], "activation": "tanh"}
trained with SGD(lr=0.1).

Each takes two steps on the first two batches of 32 test images of mlp_relu_adam.safetensors
(real MNIST digits). Saved, as in the other reference files: init.<param>, step<s>.logits,
step<s>.loss, step<s>.grad.<param>, step<s>.after.<param>.

    python3 tests/python/make_layer_reference.py   # from the repository root
"""

import safetensors.torch
import torch
from torch import nn

FIXTURES = "tests/fixtures/reference"


class GeluAveragePooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 7 * 7, 16)
        self.output = nn.Linear(16, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(nn.functional.gelu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(nn.functional.gelu(self.conv2(x)), 2)
        x = nn.functional.gelu(self.fc1(x.flatten(1)))
        return self.output(x)


class Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden1 = nn.Linear(28 * 28, 32)
        self.output = nn.Linear(32, 10)

    def forward(self, x):
        return self.output(torch.tanh(self.hidden1(x.flatten(1))))


def two_steps(model, optimizer, file):
    batches = safetensors.torch.load_file(f"{FIXTURES}/mlp_relu_adam.safetensors")
    out = {f"init.{k}": v.clone() for k, v in model.state_dict().items()}
    for step in range(2):
        x, y = batches[f"batch{step}.x"], batches[f"batch{step}.y"]
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        out[f"step{step}.logits"] = logits.detach().clone()
        out[f"step{step}.loss"] = loss.detach().reshape(1).clone()
        for name, param in model.named_parameters():
            out[f"step{step}.grad.{name}"] = param.grad.clone()
        optimizer.step()
        for name, value in model.state_dict().items():
            out[f"step{step}.after.{name}"] = value.clone()
    out = {k: v.contiguous() for k, v in out.items()}
    safetensors.torch.save_file(
        out,
        f"{FIXTURES}/{file}",
        metadata={"torch_version": torch.__version__},
    )


def main():
    torch.manual_seed(0)
    model = GeluAveragePooling()
    two_steps(model, torch.optim.Adam(model.parameters(), lr=0.01), "gelu_avgpool_adam.safetensors")
    model = Tanh()
    two_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), "tanh_sgd.safetensors")


if __name__ == "__main__":
    main()
