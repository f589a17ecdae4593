"""A tiny ONNX image model with the origin's interface, made on the spot with ``onnx``.

``inputs:0`` NHWC [N,224,224,3] in [0,1] -> ``feature_vector`` [N,dimension], non-negative:
an 8x8 average pool, a fixed random projection and a ReLU. Both the origin's algorithm and
simsearch embed query photos with it, so the cold-CLI comparison measures everything but a
big network (which costs both sides the same).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build(path: Path, dimension: int, seed: int = 0) -> Path:
    if path.exists():
        return path
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    grid, size = 8, 224
    weights = np.random.default_rng(seed).standard_normal((3 * grid * grid, dimension))
    weights = (weights / np.sqrt(3 * grid * grid)).astype(np.float32)
    image = helper.make_tensor_value_info("inputs:0", TensorProto.FLOAT, ["N", size, size, 3])
    output = helper.make_tensor_value_info("feature_vector", TensorProto.FLOAT, ["N", dimension])
    kernel = size // grid
    nodes = [
        helper.make_node("Transpose", ["inputs:0"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node(
            "AveragePool",
            ["nchw"],
            ["pooled"],
            kernel_shape=[kernel, kernel],
            strides=[kernel, kernel],
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["projected"]),
        helper.make_node("Relu", ["projected"], ["feature_vector"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_tiny_model",
        [image],
        [output],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def query_image(path: Path, seed: int = 0) -> Path:
    """A 640x480 JPEG photo stand-in with gradients and shapes."""
    if path.exists():
        return path
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, 480, dtype=np.float32)[:, None, None]
    pixels = (x * 0.6 + y * 0.4) * np.array([1.0, 0.7, 0.4], np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, 600)), int(rng.integers(0, 440))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse(
            [x0, y0, x0 + int(rng.integers(10, 200)), y0 + int(rng.integers(10, 200))], fill=fill
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)
    return path
