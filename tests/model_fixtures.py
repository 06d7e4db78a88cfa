"""A tiny but real ONNX face 'model' + card for service tests (no torch needed): a fixed random
projection of the 16x16 input, so different images give different, deterministic embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.model_card import ModelCard, Provenance


def write_tiny_model(directory: Path, input_size: int = 16, dim: int = 32, version: str = "1", seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(3 * input_size * input_size, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, input_size, input_size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    ModelCard(
        name="tiny-test",
        version=version,
        input_size=input_size,
        embedding_size=dim,
        threshold=0.5,
        training=Provenance(data="none: random projection for tests"),
    ).save(directory)
    return directory


def tiny_service_env(root: Path, **settings: str) -> dict[str, str]:
    """Environment for a test server: a tiny model and a fresh SQLite gallery under ``root``, plus
    ``settings`` given as LRFACE_ names without the prefix (``API_KEYS="k:admin"``)."""
    return {
        "LRFACE_MODEL": str(write_tiny_model(root / "model")),
        "LRFACE_GALLERY_DIR": str(root / "gallery"),
        **{f"LRFACE_{name}": value for name, value in settings.items()},
    }
