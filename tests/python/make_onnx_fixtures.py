#!/usr/bin/env python3
"""Writes the ONNX files that tests/interop.rs imports, into tests/fixtures/onnx:

mlp_logsoftmax_batch1.onnx    opset 9: x.view(-1, 784) (a Reshape with a Constant shape),
                              Linear(784, 16) (Gemm), ReLU, Linear(16, 10), LogSoftmax; the
                              input declared [1, 1, 28, 28] (a fixed batch of 1).
lenet_tanh_avgpool.onnx       opset 13: LeNet-like, Conv(1, 4, 5, padding=2), tanh, AvgPool(2),
                              Conv(4, 8, 5), tanh, AvgPool(2), x.view(x.size(0), -1) (Shape,
                              Gather, Unsqueeze, Concat, Reshape), Linear(200, 16), tanh,
                              Linear(16, 10); the input [N, 1, 28, 28] with a symbolic batch.
mlp_size_view_opset9.onnx     opset 9: input [N, 28, 28] (no channel axis), x.view(x.size(0), -1)
                              (Unsqueeze with an axes attribute), Linear(784, 4), ReLU,
                              Linear(4, 10); symbolic batch.
cnn_bn_normalize.onnx         opset 17: (x - 0.1307) / 0.3081 (Sub, Div), Conv(1, 4, 3,
                              padding=1), BatchNorm, ReLU, MaxPool(2), Conv(4, 8, 3, padding=1,
                              bias=False), BatchNorm, ReLU, MaxPool(2), Flatten, Dropout,
                              Linear(392, 10); symbolic batch. Exported without constant
                              folding, so batch norm stays a node of its own.
mlp_matmul_softmax_flat.onnx  opset 13: input [N, 784]; x @ W + b (MatMul + Add, W stored
                              [in, out]), sigmoid, x @ W + b, Softmax.
unsupported_resize.onnx       opset 13: a resampling to 7x7 (Resize) and a LeakyRelu, which
                              digits has no layer for: the import must refuse it naming both.
hand_built_opset20.onnx       opset 20, written node by node with onnx.helper, for what PyTorch's
                              exporter does not write: Sub of a Constant value_float, Div by an
                              initializer, Conv with auto_pad SAME_UPPER and no bias,
                              BatchNormalization with epsilon 1e-3, Gelu, MaxPool, Identity,
                              Reshape to an initializer shape [-1, 784], Dropout with a ratio
                              input, Gemm with transB 0 (weight stored [in, out]).
strided_conv.onnx             opset 13: a Conv with stride 2, an operator digits reads with
                              attributes it does not: refused naming the node and its strides.

Beside each importable file, NAME.logits.safetensors holds `logits` [8, 10]: what onnxruntime
computes from the file on the first 8 images of `batch0.x` in
tests/fixtures/reference/mlp_relu_adam.safetensors (real MNIST digits, pixels in [0, 1]).
Weights are PyTorch's random initialisation from a fixed seed; batch norm's statistics and
affine parameters are drawn too, so that none is the identity.

    python3 tests/python/make_onnx_fixtures.py   # from the repository root
"""

import os

import numpy as np
import onnx
import onnxruntime
import safetensors.numpy
import torch
from torch import nn

FIXTURES = "tests/fixtures/onnx"
IMAGES = safetensors.numpy.load_file("tests/fixtures/reference/mlp_relu_adam.safetensors")[
    "batch0.x"
][:8]


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.fc1(x.view(-1, 784)))
        return torch.log_softmax(self.fc2(x), dim=1)


class SizeViewMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 4)
        self.fc2 = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5, padding=2)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.fc1 = nn.Linear(8 * 5 * 5, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.tanh(self.fc1(x.view(x.size(0), -1)))
        return self.fc2(x)


class BatchNormCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 7 * 7, 10)
        for bn in (self.bn1, self.bn2):
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = (x - 0.1307) / 0.3081
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(self.dropout(torch.flatten(x, 1)))


class MatMulMlp(nn.Module):
    """Weights stored [in, out] and applied with `@`, as code written without nn.Linear does."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(784, 12) * 0.05)
        self.b1 = nn.Parameter(torch.randn(12) * 0.1)
        self.w2 = nn.Parameter(torch.randn(12, 10) * 0.3)
        self.b2 = nn.Parameter(torch.randn(10) * 0.1)

    def forward(self, x):
        x = torch.sigmoid(x @ self.w1 + self.b1)
        return torch.softmax(x @ self.w2 + self.b2, dim=1)


class Resampling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 5 * 5, 10)

    def forward(self, x):
        x = nn.functional.interpolate(x, scale_factor=0.25, mode="nearest")
        x = nn.functional.leaky_relu(self.conv(x))
        return self.fc(torch.flatten(x, 1))


class StridedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2)
        self.fc = nn.Linear(2 * 13 * 13, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def hand_built():
    """The opset 20 graph described above, with weights drawn from torch's generator."""
    from onnx import TensorProto, helper, numpy_helper

    def weight(name, *shape, low=-0.5, high=0.5):
        values = torch.empty(shape).uniform_(low, high).numpy()
        return numpy_helper.from_array(values.astype(np.float32), name)

    initializers = [
        numpy_helper.from_array(np.array(0.25, dtype=np.float32), "std"),
        weight("conv.weight", 4, 1, 3, 3),
        weight("bn.scale", 4, low=0.5, high=1.5),
        weight("bn.shift", 4),
        weight("bn.mean", 4, low=-0.2, high=0.2),
        weight("bn.var", 4, low=0.5, high=2.0),
        numpy_helper.from_array(np.array([-1, 784], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(0.3, dtype=np.float32), "ratio"),
        weight("fc.weight", 784, 10, low=-0.05, high=0.05),
        weight("fc.bias", 10),
    ]
    nodes = [
        helper.make_node("Constant", [], ["mean"], value_float=0.5),
        helper.make_node("Sub", ["images", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "conv.weight"], ["conv"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        helper.make_node(
            "BatchNormalization", ["conv", "bn.scale", "bn.shift", "bn.mean", "bn.var"], ["bn"], epsilon=1e-3
        ),
        helper.make_node("Gelu", ["bn"], ["gelu"]),
        helper.make_node("MaxPool", ["gelu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Identity", ["pool"], ["same"]),
        helper.make_node("Reshape", ["same", "flat_shape"], ["flat"]),
        helper.make_node("Dropout", ["flat", "ratio"], ["dropped"]),
        helper.make_node("Gemm", ["dropped", "fc.weight", "fc.bias"], ["logits"], transB=0),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    onnx.checker.check_model(model)
    path = os.path.join(FIXTURES, "hand_built_opset20.onnx")
    onnx.save(model, path)
    return path


def export(model, name, opset, example, dynamic_batch, **options):
    path = os.path.join(FIXTURES, name)
    axes = {"images": {0: "N"}, "logits": {0: "N"}} if dynamic_batch else None
    torch.onnx.export(
        model.eval(),
        (example,),
        path,
        input_names=["images"],
        output_names=["logits"],
        opset_version=opset,
        dynamic_axes=axes,
        dynamo=False,
        **options,
    )
    return path


def save_logits(path, image_shape=(1, 28, 28)):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = IMAGES.reshape(8, *image_shape)
    declared_batch = session.get_inputs()[0].shape[0]
    if declared_batch == 1:
        logits = np.concatenate([session.run(None, {"images": image[None]})[0] for image in images])
    else:
        logits = session.run(None, {"images": images})[0]
    assert logits.shape == (8, 10), logits.shape
    safetensors.numpy.save_file(
        {"logits": np.ascontiguousarray(logits, dtype=np.float32)},
        path.replace(".onnx", ".logits.safetensors"),
    )


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    torch.manual_seed(17)
    square = torch.zeros(1, 1, 28, 28)
    flat = torch.zeros(1, 784)
    save_logits(export(Mlp(), "mlp_logsoftmax_batch1.onnx", 9, square, False))
    save_logits(export(LeNet(), "lenet_tanh_avgpool.onnx", 13, square, True))
    cnn = export(BatchNormCnn(), "cnn_bn_normalize.onnx", 17, square, True, do_constant_folding=False)
    save_logits(cnn)
    save_logits(export(MatMulMlp(), "mlp_matmul_softmax_flat.onnx", 13, flat, True), (784,))
    export(Resampling(), "unsupported_resize.onnx", 13, square, True)
    export(StridedConv(), "strided_conv.onnx", 13, square, True)
    save_logits(hand_built())
    unchannelled = torch.zeros(1, 28, 28)
    save_logits(export(SizeViewMlp(), "mlp_size_view_opset9.onnx", 9, unchannelled, True), (28, 28))


if __name__ == "__main__":
    main()
