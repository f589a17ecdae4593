"""Small, deterministic ONNX image models built with the `onnx` package for the tests.

Each pools the image to a coarse grid and projects it with a fixed random matrix: cheap, but a
real ONNX graph run by onnxruntime, whose features tell different images apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_model(
    path: Path,
    *,
    dimension: int = 64,
    size: int = 224,
    layout: str = "NHWC",
    input_name: str = "inputs:0",
    output_name: str = "feature_vector",
    grid: int = 8,
    seed: int = 0,
    extra_inputs: int = 0,
) -> Path:
    """Write a model: image [N,size,size,3] (NHWC) or [N,3,size,size] (NCHW) -> [N, dimension]."""
    assert size % grid == 0
    kernel = size // grid
    weights = np.random.default_rng(seed).standard_normal((3 * grid * grid, dimension))
    weights = (weights / np.sqrt(3 * grid * grid)).astype(np.float32)
    shape = ["N", size, size, 3] if layout == "NHWC" else ["N", 3, size, size]
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
    output = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", dimension])
    nodes = []
    pooled_input = input_name
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [input_name], ["nchw"], perm=[0, 3, 1, 2]))
        pooled_input = "nchw"
    nodes += [
        helper.make_node(
            "AveragePool",
            [pooled_input],
            ["pooled"],
            kernel_shape=[kernel, kernel],
            strides=[kernel, kernel],
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], [output_name]),
    ]
    inputs = [image] + [
        helper.make_tensor_value_info(f"extra_{i}", TensorProto.FLOAT, ["N", 4])
        for i in range(extra_inputs)
    ]
    graph = helper.make_graph(
        nodes,
        "simsearch_test_model",
        inputs,
        [output],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_vector_model(path: Path) -> Path:
    """A model with no image input at all: [N, 16] -> [N, 16]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "no_image", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
