#!/usr/bin/env python3
"""Checks digits' exported files in PyTorch and onnxruntime (run by tests/interop.rs).

The exported state dict must load into the PyTorch module of the same architecture with a
strict `load_state_dict`, and both it and the ONNX file must give digits' logits on the same
images within a relative error (‖ours − digits‖ / ‖digits‖) of 1e-5.

    check_export.py --arch mlp --pytorch F.safetensors --onnx F.onnx \
        --images X.u8 --logits L.f32 [--normalize MEAN STD]

Prints one JSON object; exits 1 when a check fails.
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime
import safetensors.torch
import torch
from torch import nn


ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": nn.functional.gelu}
# `pool` in a run's config: "max", "average" or null; true/false before average pooling.
POOLS = {True: nn.functional.max_pool2d, "max": nn.functional.max_pool2d, "average": nn.functional.avg_pool2d}


class Net(nn.Module):
    """The tutorial's network (`hidden` widths, any of digits' activations)."""

    def __init__(self, hidden, activation):
        super().__init__()
        widths = [28 * 28] + hidden
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            setattr(self, f"hidden{i + 1}", nn.Linear(a, b))
        self.output = nn.Linear(widths[-1], 10)
        self.layers = len(hidden)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x):
        x = x.flatten(1)
        for i in range(self.layers):
            x = self.activation(getattr(self, f"hidden{i + 1}")(x))
        return self.output(x)


class Cnn(nn.Module):
    """digits' `cnn` and `lenet5` models, from the layer list in the run's config."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        channels = 1
        side = 28
        for i, layer in enumerate(config["conv"]):
            bias = not config["batch_norm"]
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels, layer["channels"], layer["kernel"], padding=layer["padding"], bias=bias))
            if config["batch_norm"]:
                setattr(self, f"bn{i + 1}", nn.BatchNorm2d(layer["channels"]))
            channels = layer["channels"]
            side = side + 2 * layer["padding"] - layer["kernel"] + 1
            if layer["pool"]:
                side //= 2
        widths = [channels * side * side] + config["hidden"]
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            setattr(self, f"fc{i + 1}", nn.Linear(a, b))
        self.output = nn.Linear(widths[-1], 10)
        self.activation = ACTIVATIONS[config["activation"]]

    def forward(self, x):
        for i, layer in enumerate(self.config["conv"]):
            x = getattr(self, f"conv{i + 1}")(x)
            if self.config["batch_norm"]:
                x = getattr(self, f"bn{i + 1}")(x)
            x = self.activation(x)
            if layer["pool"]:
                x = POOLS[layer["pool"]](x, 2)
        x = x.flatten(1)
        for i in range(len(self.config["hidden"])):
            x = self.activation(getattr(self, f"fc{i + 1}")(x))
        return self.output(x)


def relative_error(ours, reference):
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="the run's config.json")
    parser.add_argument("--pytorch", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--logits", required=True)
    args = parser.parse_args()

    model_config = json.load(open(args.config))["model"]
    images = np.fromfile(args.images, dtype=np.uint8).astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    expected = np.fromfile(args.logits, dtype=np.float32).reshape(len(images), 10)

    if model_config["arch"] == "mlp":
        model = Net(model_config["hidden"], model_config["activation"])
    else:
        model = Cnn(model_config)
    model.load_state_dict(safetensors.torch.load_file(args.pytorch), strict=True)
    model.eval()
    x = torch.from_numpy(images)
    normalization = model_config.get("normalization")
    if normalization:
        x = (x - normalization["mean"]) / normalization["std"]
    with torch.no_grad():
        torch_logits = model(x).numpy()

    session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"images": images})[0]

    result = {
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "images": len(images),
        "pytorch_relative_error": relative_error(torch_logits, expected),
        "pytorch_max_abs_diff": float(np.abs(torch_logits - expected).max()),
        "onnx_relative_error": relative_error(onnx_logits, expected),
        "onnx_max_abs_diff": float(np.abs(onnx_logits - expected).max()),
    }
    print(json.dumps(result))
    ok = result["pytorch_relative_error"] <= 1e-5 and result["onnx_relative_error"] <= 1e-5
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
