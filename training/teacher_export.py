"""Export dlib's face-recognition ResNet (the distillation teacher) to ONNX for :mod:`lrface.teacher`.

dlib's network (``dlib_face_recognition_resnet_model_v1.dat`` in the face-recognition-models
package) is read straight from dlib's serialisation format, rebuilt as a torch module, checked
against dlib's own ``compute_face_descriptor`` on face chips (descriptors within
``PARITY_TOLERANCE``), and exported with ``torch.onnx.export``. ONNX Runtime runs it about ten times
faster than dlib's CPU build (no BLAS), and on a GPU where onnxruntime-gpu is installed.

The format, as dlib writes it (``dlib/serialize.h``, ``dlib/dnn/layers.h``): integers are one byte
(byte count, high bit = negative) then that many little-endian bytes; strings are a length then the
bytes; doubles are two integers (mantissa, exponent); a tensor is version 2, four integers (its
shape) and raw little-endian float32s. Each layer's parameters follow its name (``con_4``,
``affine_``, ``max_pool_2``, ...) in forward order, which is how they are found here. The network
(dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution, 3x3/2 max pool, then residual
blocks of two 3x3 convolutions each, where a down-sampling block adds its 2x2 average-pooled input;
dlib adds tensors of different shapes over their overlap (zero elsewhere), which matters where a
stride-2 block's output is smaller than its pooled input. Global average pool, then a 256x128 matrix.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrface.model_card import file_sha256, publish_model_dir, staging_dir
from lrface.teacher import DLIB_LICENCE, DLIB_VERSION, TEACHER_CARD, TEACHER_FILE

# ONNX Runtime and torch against dlib: float32 sums in another order (observed ~4e-7 on LFW chips).
PARITY_TOLERANCE = 1e-4
LAYER_NAME = re.compile(rb"\x01([\x03-\x20])([a-z][a-z0-9_]*_[a-z0-9_]*)")
KNOWN_LAYERS = {"input_rgb_image_sized", "con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2"}


class DlibFormatError(ValueError):
    """The file is not the network this exporter knows."""


class _Reader:
    """dlib's serialisation read from ``data`` at ``at``; a value that runs past the end, or that dlib
    could not have written, raises :class:`DlibFormatError`."""

    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data, self.at = data, at

    def _take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise DlibFormatError(f"{size} bytes wanted at byte {self.at} of {len(self.data)}: truncated file")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def integer(self) -> int:
        head = self._take(1)[0]
        size, negative = head & 0x0F, bool(head & 0x80)
        if size > 8 or head & 0x70:
            raise DlibFormatError(f"byte {self.at - 1}: {head:#04x} does not start an integer")
        value = int.from_bytes(self._take(size), "little")
        return -value if negative else value

    def string(self) -> str:
        raw = self._take(self.integer())
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"byte {self.at - len(raw)}: a layer name that is not ASCII") from None

    def double(self) -> float:
        mantissa = self.integer()
        return float(mantissa * 2.0 ** self.integer())

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.at}: only version 2 is known")
        shape = [self.integer() for _ in range(4)]
        if any(n < 0 for n in shape):
            raise DlibFormatError(f"tensor shape {shape} at byte {self.at}")
        count = 1
        for n in shape:  # Python integers: a hostile shape cannot wrap around as numpy's would
            count *= n
        return np.frombuffer(self._take(4 * count), "<f4").astype(np.float32)


@dataclass(frozen=True)
class Layer:
    kind: str
    weight: np.ndarray | None = None  # convolution (out, in, kh, kw); affine gamma; fc (in, out)
    bias: np.ndarray | None = None  # convolution bias; affine beta
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    window: tuple[int, int] = (0, 0)  # pools; (0, 0): the whole plane
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the input layer's per-channel average


def parse_dlib_resnet(path: Path) -> list[Layer]:
    """The layers of dlib's serialised face-recognition network, in forward order. Raises
    :class:`DlibFormatError` on a file that is not that network (truncated, or another format)."""
    data = path.read_bytes()
    layers: list[Layer] = []
    end = 0  # where the last layer read ends: a name-like run of bytes before it is that layer's data
    for match in LAYER_NAME.finditer(data):
        # The name is as long as its length byte says: bytes after it may be letters too ("relu_110").
        # Bytes of a tensor may still look like a name; a layer this exporter does not know would show
        # as a network that disagrees with dlib (the export's parity check).
        name = data[match.start(2) : match.start(2) + match.group(1)[0]].decode("ascii", "replace")
        if name not in KNOWN_LAYERS or match.start() < end:
            continue
        reader = _Reader(data, match.start())
        reader.string()
        try:
            layers.append(_layer(name, reader))
        except ValueError as exc:  # a reshape that does not fit; DlibFormatError is one too
            raise DlibFormatError(f"{path}: layer {name} at byte {match.start()}: {exc}") from None
        end = reader.at
    if not layers or layers[0].kind != "input_rgb_image_sized" or layers[-1].kind != "fc_2":
        raise DlibFormatError(f"{path}: not dlib's face-recognition network (input layer ... fc layer)")
    return layers


def _layer(name: str, reader: _Reader) -> Layer:
    if name == "input_rgb_image_sized":
        red, green, blue = reader.double(), reader.double(), reader.double()
        return Layer(name, mean=(red, green, blue))
    if name == "con_4":
        params = reader.tensor()
        filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
        if min(filters, rows, cols, stride_y, stride_x) < 1 or min(pad_y, pad_x) < 0:
            raise DlibFormatError(f"convolution of {filters} {rows}x{cols} filters, stride {stride_y}x{stride_x}")
        inputs, extra = divmod(params.size - filters, filters * rows * cols)
        if inputs < 1 or extra:
            raise DlibFormatError(f"{params.size} parameters for {filters} {rows}x{cols} filters and their biases")
        weight = params[: params.size - filters].reshape(filters, inputs, rows, cols)
        return Layer(name, weight, params[-filters:], (stride_y, stride_x), (pad_y, pad_x))
    if name == "affine_":
        params = reader.tensor()
        if params.size % 2:
            raise DlibFormatError(f"{params.size} affine parameters: not gamma and beta of one size")
        half = params.size // 2
        return Layer(name, params[:half], params[half:])
    if name in ("max_pool_2", "avg_pool_2"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(6))
        if min(rows, cols, pad_y, pad_x) < 0 or min(stride_y, stride_x) < 1:
            raise DlibFormatError(f"pool of {rows}x{cols}, stride {stride_y}x{stride_x}, padding {pad_y}x{pad_x}")
        return Layer(name, stride=(stride_y, stride_x), padding=(pad_y, pad_x), window=(rows, cols))
    if name == "fc_2":
        outputs, inputs = reader.integer(), reader.integer()
        weight = reader.tensor()
        if outputs < 1 or inputs < 1 or weight.size != inputs * outputs:
            raise DlibFormatError(f"{weight.size} weights for {inputs} -> {outputs} (a layer with a bias?)")
        return Layer(name, weight.reshape(inputs, outputs))
    return Layer(name)


def _add_over_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, each input zero-padded at its end."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class DlibResNet(nn.Module):
    """dlib's network as a torch module: ``(N, 3, 150, 150)`` RGB in 0-255 -> ``(N, 128)`` descriptors
    (not normalised, as dlib returns them)."""

    def __init__(self, layers: list[Layer]) -> None:
        super().__init__()
        self.layers = layers
        self.mean: torch.Tensor
        self.register_buffer("mean", torch.tensor(layers[0].mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.params = nn.ParameterList(
            nn.Parameter(torch.from_numpy(array), requires_grad=False)
            for layer in layers
            for array in (layer.weight, layer.bias)
            if array is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        params = iter(self.params)
        block_input: torch.Tensor | None = None
        in_block = False
        layers = self.layers[1:]
        i = 0
        while i < len(layers):
            layer = layers[i]
            if layer.kind == "con_4":
                if not in_block:
                    block_input, in_block = x, True
                weight, bias = next(params), next(params)
                x = F.conv2d(x, weight, bias, layer.stride, layer.padding)
            elif layer.kind == "affine_":
                gamma, beta = next(params), next(params)
                x = x * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
            elif layer.kind == "relu_":
                x = F.relu(x)
            elif layer.kind == "max_pool_2":
                if layer.padding != (0, 0):
                    raise DlibFormatError("padded max pooling is not supported")
                x, in_block = F.max_pool2d(x, layer.window, layer.stride), False
            elif layer.kind == "avg_pool_2" and layer.window == (0, 0):
                x = x.mean(dim=(2, 3))
            elif layer.kind == "avg_pool_2":  # a down-sampling block: its input, pooled, is added next
                if block_input is None or i + 1 >= len(layers) or layers[i + 1].kind != "add_prev_":
                    raise DlibFormatError("an average pool that does not close a residual block")
                pooled = F.avg_pool2d(block_input, layer.window, layer.stride, layer.padding, count_include_pad=False)
                x, in_block = _add_over_overlap(pooled, x), False
                i += 1
            elif layer.kind == "add_prev_":
                if block_input is None:
                    raise DlibFormatError("a residual sum before any block")
                x, in_block = _add_over_overlap(block_input, x), False
            elif layer.kind == "fc_2":
                x = x.flatten(1) @ next(params)
            i += 1
        return x


def sample_chips(count: int = 24) -> np.ndarray:
    """``(N, 150, 150, 3)`` uint8 chips for the parity check: dlib-aligned LFW faces where LFW is at
    hand (the teacher's real input), else synthetic faces."""
    from lrface.alignment import CHIP_SIZE, DlibAligner
    from lrface.data.lfw import images_dir
    from lrface.preprocessing import load_image_file
    from lrface.settings import get_settings

    root = images_dir(get_settings().lfw_root())
    photos = sorted(root.glob("*/*_0001.jpg"))[::97][:count] if root.is_dir() else []
    aligner = DlibAligner()
    chips = [chip for chip in (aligner.align_largest(load_image_file(p), True) for p in photos) if chip is not None]
    rng = np.random.default_rng(0)
    while len(chips) < count:  # smooth random images: not faces, but the arithmetic is the same
        coarse = rng.uniform(0, 255, size=(10, 10, 3))
        chips.append(np.kron(coarse, np.ones((15, 15, 1))).astype(np.uint8)[:CHIP_SIZE, :CHIP_SIZE])
    return np.stack(chips)


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    """dlib's own descriptors of ``chips`` (the reference)."""
    from lrface.alignment import _load_dlib

    dlib, models = _load_dlib()
    model = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    return np.asarray(model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips]), dtype=np.float32)


def _readme(card: dict[str, object]) -> str:
    return f"""# dlib face-recognition ResNet (ONNX): the teacher

dlib's 128-d face descriptor network (`{DLIB_VERSION}`, Davis King), exported to ONNX by
`lrface export-teacher` (`training/teacher_export.py`) from the file in face-recognition-models
{card["face_recognition_models_version"]}, and run by `lrface/teacher.py` with ONNX Runtime: the
distillation teacher, and the embedder the service routes large faces to (see the student's card).

- **Input**: `N x 3 x 150 x 150` float32 RGB in 0-255, a dlib-aligned chip (`lrface.preprocessing.hr_chip`);
  the network subtracts dlib's channel means and divides by 256 itself.
- **Output**: `N x 128` descriptors as dlib returns them (lrface normalises them to unit length).
- **Parity**: on {card["parity_chips"]} chips, largest |ONNX Runtime - dlib| = {card["onnx_dlib_max_abs_diff"]:.1e}
  (tolerance {PARITY_TOLERANCE:.0e}): the same embedding space as dlib's, so galleries and teacher
  caches made with dlib stay valid.
- **Licence**: {DLIB_LICENCE}.
- **SHA-256** of `{TEACHER_FILE}`: `{card["sha256"]}`.
"""


def export_teacher(out: Path, dat_path: Path | None = None) -> dict[str, object]:
    """Parse dlib's network, check it against dlib, export it into ``out`` (``dlib_resnet.onnx``,
    ``card.json``, ``README.md``); raises when ONNX Runtime and dlib disagree beyond the tolerance."""
    import onnxruntime as ort

    from lrface.alignment import _load_dlib

    if dat_path is None:
        _, models = _load_dlib()
        dat_path = Path(models.face_recognition_model_location())
    module = DlibResNet(parse_dlib_resnet(dat_path)).eval()
    chips = sample_chips()
    want = dlib_descriptors(chips)
    batch = torch.from_numpy(chips).permute(0, 3, 1, 2).float()
    with staging_dir(out) as stage:
        path = stage / TEACHER_FILE
        with warnings.catch_warnings():  # the shapes traced are fixed (150 px): dlib's input layer
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                module, (batch[:2],), str(path), input_names=["chips"], output_names=["descriptor"],
                dynamic_axes={"chips": {0: "batch"}, "descriptor": {0: "batch"}}, opset_version=17, dynamo=False,
            )  # fmt: skip
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"chips": batch.numpy()})[0]
        gap = float(np.abs(got - want).max())
        if gap > PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX Runtime and dlib differ by {gap:.2e} > {PARITY_TOLERANCE:.0e}")
        card: dict[str, object] = {
            "name": "dlib",
            "version": DLIB_VERSION,
            "onnx_file": TEACHER_FILE,
            "sha256": file_sha256(path),
            "source": f"{dat_path.name} (face-recognition-models), SHA-256 {file_sha256(dat_path)}",
            "face_recognition_models_version": package_version("face-recognition-models"),
            "torch_version": torch.__version__,
            "licence": DLIB_LICENCE,
            "input": "N x 3 x 150 x 150 float32, RGB 0-255 (dlib-aligned chip)",
            "embedding_size": int(got.shape[1]),
            "parity_chips": int(len(chips)),
            "onnx_dlib_max_abs_diff": gap,
        }
        (stage / "README.md").write_text(_readme(card))
        (stage / TEACHER_CARD).write_text(json.dumps(card, indent=2) + "\n")
        publish_model_dir(stage, out)
    return card


def layers_from_onnx(path: Path) -> list[Layer]:
    """The layers of the exported teacher (``dlib_resnet.onnx``), read back from its graph: the
    released file is enough to rebuild :class:`DlibResNet` (to initialise a student from it) where
    neither dlib nor its ``.dat`` is installed, e.g. a GPU machine. The graph is walked in the order
    :func:`export_teacher` traced it; anything else raises :class:`DlibFormatError`."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
        layers = _walk_teacher_graph(graph, {init.name: numpy_helper.to_array(init) for init in graph.initializer})
    except Exception as exc:  # a file onnx cannot read, or a graph of another shape (DlibFormatError too)
        raise DlibFormatError(f"{path}: not a teacher exported by lrface export-teacher ({exc})") from None
    _check_against_onnx_runtime(path, graph.input[0].name, layers)
    return layers


def _check_against_onnx_runtime(path: Path, input_name: str, layers: list[Layer]) -> None:
    """The rebuilt network must compute what the file computes (one smooth random chip): a graph this
    reader mis-walked fails here rather than training a different network."""
    import onnxruntime as ort

    coarse = np.random.default_rng(0).uniform(0, 255, size=(1, 3, 10, 10)).astype(np.float32)
    chip = np.kron(coarse, np.ones((1, 1, 15, 15), np.float32))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {input_name: chip})[0]
    with torch.no_grad():
        got = DlibResNet(layers)(torch.from_numpy(chip)).numpy()
    gap = float(np.abs(got - want).max())
    if gap > PARITY_TOLERANCE:
        raise DlibFormatError(f"{path}: the network rebuilt from its graph differs from it by {gap:.2e}")


def _walk_teacher_graph(graph: object, raw: dict[str, np.ndarray]) -> list[Layer]:
    import onnx

    weights = {name: array.astype(np.float32) for name, array in raw.items()}
    if "mean" not in weights:
        raise DlibFormatError("no input mean")
    layers = [Layer("input_rgb_image_sized", mean=tuple(float(v) for v in weights["mean"].ravel()))]  # type: ignore[arg-type]
    skip_next_add = False
    gamma: np.ndarray | None = None
    for node in graph.node:  # type: ignore[attr-defined]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        consts = [weights[name] for name in node.input if name in weights]
        if node.op_type == "Conv":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                raise DlibFormatError(f"asymmetric padding {pads}")
            weight, bias = weights[node.input[1]], weights[node.input[2]]
            layers.append(Layer("con_4", weight, bias, tuple(attrs["strides"]), (pads[0], pads[1])))  # type: ignore[arg-type]
        elif node.op_type == "Mul" and consts:
            gamma = consts[0].ravel()
        elif node.op_type == "Add" and consts:  # an affine layer's beta follows its gamma
            if gamma is None:
                raise DlibFormatError("an affine shift without its scale")
            layers.append(Layer("affine_", gamma, consts[0].ravel()))
            gamma = None
        elif node.op_type == "Add":
            if not skip_next_add:
                layers.append(Layer("add_prev_"))
            skip_next_add = False
        elif node.op_type == "Relu":
            layers.append(Layer("relu_"))
        elif node.op_type in ("MaxPool", "AveragePool"):
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            kind = "max_pool_2" if node.op_type == "MaxPool" else "avg_pool_2"
            window, stride = tuple(attrs["kernel_shape"]), tuple(attrs["strides"])
            layers.append(Layer(kind, stride=stride, padding=(pads[0], pads[1]), window=window))  # type: ignore[arg-type]
            skip_next_add = kind == "avg_pool_2"  # DlibResNet adds the pooled input itself
            if kind == "avg_pool_2":
                layers.append(Layer("add_prev_"))
        elif node.op_type == "ReduceMean":
            layers.append(Layer("avg_pool_2"))
        elif node.op_type == "MatMul":
            layers.append(Layer("fc_2", consts[0]))
    if layers[-1].kind != "fc_2" or gamma is not None:
        raise DlibFormatError("no final fc layer, or an affine scale without its shift")
    return layers
