#!/usr/bin/env python3
"""Makes tests/fixtures/import/: one small PyTorch file per way people save MNIST models.

Each file holds a tiny network (a few KB to ~60 KB) saved the way real checkpoints are:
names digits does not use (`fc1..fc3`, `0/2/4`, `convnet.c1`, batch norm declared beside its
convolution), LeNet without padding with tanh and average pooling, a `.pth.tar` training
checkpoint, a pre-1.6 legacy pickle, a whole pickled module, and a zip whose stem is exactly 21
characters (the length that trips the `zip` crate). `expected.json` holds, per file, the flags
`digits import` needs and the outputs PyTorch computes on `images` (u8 pixels, divided by 255):
tests/interop.rs imports each file and compares digits' log-probabilities with PyTorch's.

    python3 tests/python/make_import_fixtures.py   # rewrites tests/fixtures/import/
"""

import collections
import json
import pathlib

import torch
from torch import nn
from torch.nn import functional as F

OUT = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "import"
# The normalisation most MNIST code uses: `transforms.Normalize((0.1307,), (0.3081,))`.
MEAN, STD = 0.1307, 0.3081


class FcMlp(nn.Module):
    """An MLP named `fc1..fc3`, trained on normalised inputs."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 16)
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(12, 10)

    def forward(self, x):
        x = ((x - MEAN) / STD).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Flat(nn.Module):
    """`nn.Sequential` wrapped so that it takes images: its state dict is the Sequential's."""

    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        return self.seq(x.flatten(1))


class LeNetTanh(nn.Module):
    """LeNet without padding: tanh, average pooling (needs `--layers`)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 5)
        self.conv2 = nn.Conv2d(2, 4, 5)
        self.fc1 = nn.Linear(4 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 8)
        self.fc3 = nn.Linear(8, 10)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2).flatten(1)
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


class ConvBn(nn.Module):
    """Convolutions with bias and batch norm, declared as `conv1, bn1, ...` (a name sort puts
    `bn1` before `conv1`)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 7 * 7, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2).flatten(1)
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


class Conv2050(nn.Module):
    """The Caffe-style LeNet of 20 and 50 channels with a 500-unit layer, scaled down."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5)
        self.conv2 = nn.Conv2d(4, 6, 5)
        self.fc1 = nn.Linear(6 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class ConvnetC1(nn.Module):
    """LeNet-5 as a popular repository writes it: `convnet.c1/c3/c5`, `fc.f6/f7`, a c5
    convolution that leaves 1x1 maps, and a log-softmax head."""

    def __init__(self):
        super().__init__()
        self.convnet = nn.Sequential(
            collections.OrderedDict(
                c1=nn.Conv2d(1, 3, 5),
                relu1=nn.ReLU(),
                s2=nn.MaxPool2d(2),
                c3=nn.Conv2d(3, 5, 5),
                relu3=nn.ReLU(),
                s4=nn.MaxPool2d(2),
                c5=nn.Conv2d(5, 12, 4),
                relu5=nn.ReLU(),
            )
        )
        self.fc = nn.Sequential(
            collections.OrderedDict(f6=nn.Linear(12, 8), relu6=nn.ReLU(), f7=nn.Linear(8, 10))
        )

    def forward(self, x):
        return F.log_softmax(self.fc(self.convnet(x).flatten(1)), dim=1)


def randomise_batch_norm(model):
    """Non-trivial batch-norm parameters and running statistics, as after training."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)


def main():
    torch.manual_seed(17)
    OUT.mkdir(parents=True, exist_ok=True)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    pixels = images.float() / 255
    expected = {"images": images.flatten().tolist(), "files": {}}

    def record(file, model, flags):
        model.eval()
        with torch.no_grad():
            outputs = model(pixels)
        expected["files"][file] = {"flags": flags, "outputs": outputs.flatten().tolist()}

    mlp = FcMlp()
    torch.save(mlp.state_dict(), OUT / "mlp_fc1_fc3.pt")
    record("mlp_fc1_fc3.pt", mlp, ["--normalize", f"{MEAN},{STD}"])

    seq = Flat(nn.Sequential(nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 14), nn.ReLU(), nn.Linear(14, 10)))
    torch.save(seq.seq.state_dict(), OUT / "mlp_sequential.pth")
    record("mlp_sequential.pth", seq, [])

    lenet = LeNetTanh()
    torch.save(lenet.state_dict(), OUT / "lenet_tanh_avgpool.pt")
    layers = "conv2k5,tanh,avgpool,conv4k5,tanh,avgpool,fc12,tanh,fc8,tanh,fc10"
    record("lenet_tanh_avgpool.pt", lenet, ["--layers", layers])

    conv_bn = ConvBn()
    randomise_batch_norm(conv_bn)
    torch.save(conv_bn.state_dict(), OUT / "conv_bn_bias.pt")
    record("conv_bn_bias.pt", conv_bn, [])

    conv2050 = Conv2050()
    torch.save(conv2050.state_dict(), OUT / "conv_20_50.pt")
    record("conv_20_50.pt", conv2050, [])

    convnet = ConvnetC1()
    optimizer = torch.optim.Adam(convnet.parameters())
    convnet(pixels).sum().backward()
    optimizer.step()
    checkpoint = {
        "epoch": 12,
        "best_accuracy": 0.99,
        "model_state_dict": convnet.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
    }
    torch.save(checkpoint, OUT / "convnet_checkpoint.pth.tar")
    # Three networks fit its shapes (c5's 1x1 maps are reached three ways); one pads alike.
    record("convnet_checkpoint.pth.tar", convnet, [])

    legacy = Flat(nn.Sequential(nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10)))
    torch.save(legacy.state_dict(), OUT / "legacy_state_dict.pt", _use_new_zipfile_serialization=False)
    record("legacy_state_dict.pt", legacy, [])

    whole = Conv2050()
    torch.save(whole, OUT / "whole_module.pt")
    record("whole_module.pt", whole, [])
    # Refused, with the one-line fix: pytorch-reader cannot read modules pickled before 1.6.
    torch.save(whole, OUT / "legacy_whole_module.pt", _use_new_zipfile_serialization=False)

    stem = "stem_of_21_characters"
    assert len(stem) == 21
    torch.save(mlp.state_dict(), OUT / f"{stem}.pth")
    record(f"{stem}.pth", mlp, ["--normalize", f"{MEAN},{STD}"])

    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
