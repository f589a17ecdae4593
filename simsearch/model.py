"""ONNX image models: reading what a model declares, and running it.

One cache of onnxruntime sessions per process, keyed by model file and thread count; a session
whose file changed on disk (size or modification time) is replaced at its next use, so a
long-running server picks up a re-exported model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError, one_line
from .files import sha256_file
from .preprocess import Preprocess, load_batch

BUILTIN_PREFIX = "builtin:"
DEFAULT_MODEL = "efficientnet-lite0"
_MODELS_DIR = Path(__file__).parent / "models"
_BUILTIN_SPECS = {DEFAULT_MODEL: "efficientnet_lite0.json"}


@dataclass(frozen=True)
class Overrides:
    """What the user says about a model, over what the model declares."""

    input_name: str | None = None
    output_name: str | None = None
    layout: str | None = None
    width: int | None = None
    height: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def apply(self, spec: Preprocess) -> Preprocess:
        changes: dict[str, Any] = {
            key: value
            for key, value in (
                ("layout", self.layout),
                ("width", self.width),
                ("height", self.height),
                ("mean", self.mean),
                ("std", self.std),
            )
            if value is not None
        }
        return replace(spec, **changes) if changes else spec

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Overrides:
        """Overrides sent as JSON, whose lists become the tuples Preprocess compares."""
        given = dict(data or {})
        for key in ("mean", "std"):
            if given.get(key) is not None:
                given[key] = tuple(float(v) for v in given[key])
        known = {k: v for k, v in given.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Interface:
    """The names and preprocessing a model is run with."""

    input_name: str
    output_name: str
    preprocess: Preprocess
    dimension: int | None  # None when the model leaves it symbolic


class Model:
    """An ONNX image model, loaded once, that turns image batches into feature vectors."""

    def __init__(self, ref: str, path: Path, session: Any, interface: Interface) -> None:
        self.ref = ref  # what a feature set records: "builtin:NAME" or an absolute path
        self.path = path
        self.interface = interface
        self._session = session

    @cached_property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @property
    def preprocess(self) -> Preprocess:
        return self.interface.preprocess

    def with_preprocess(self, preprocess: Preprocess) -> Model:
        """The same session run with other preprocessing (a feature set's stored one)."""
        return Model(
            self.ref, self.path, self._session, replace(self.interface, preprocess=preprocess)
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Feature vectors, float32 [N, D], for a preprocessed batch."""
        try:
            (output,) = self._session.run(
                [self.interface.output_name], {self.interface.input_name: batch}
            )
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ModelError(f"{self.path}: inference failed ({one_line(exc)})") from None
        features = np.asarray(output, dtype=np.float32)
        return features.reshape(features.shape[0], -1)

    def embed_files(self, paths: Sequence[Path]) -> np.ndarray:
        """Feature vectors for image files, preprocessed as this model's interface says."""
        return self.run(load_batch(paths, self.preprocess))

    def check_dimension(self, dimension: int, feature_set: str, hint: str = "") -> None:
        """Refuse a model whose vectors cannot be compared with a feature set's."""
        declared = self.interface.dimension
        if declared is not None and declared != dimension:
            raise ModelError(
                f"{self.path}: gives {declared}-d vectors; feature set {feature_set!r} holds "
                f"{dimension}-d{hint}"
            )

    def warm_up(self) -> None:
        """Run once on a blank image: the first run allocates, so pay for it now."""
        self.run(np.zeros(self.preprocess.input_shape(), np.float32))

    def with_threads(self, threads: int) -> Model:
        """The same model on a session that runs inference on ``threads`` threads, without
        spinning, so that decoding threads beside it keep their cores (bulk embedding)."""
        return Model(self.ref, self.path, _session(self.path, threads), self.interface)


# (model file, threads or None for onnxruntime's default) -> ((mtime_ns, size), session)
_sessions: dict[tuple[Path, int | None], tuple[tuple[int, int], Any]] = {}


def load_model(ref: str | None = None, overrides: Overrides | None = None) -> Model:
    """The model at ``ref`` (a path, ``builtin:NAME``, or None for the default)."""
    overrides = overrides or Overrides()
    ref = ref or f"{BUILTIN_PREFIX}{DEFAULT_MODEL}"
    if ref.startswith(BUILTIN_PREFIX):
        path, declared = _builtin(ref[len(BUILTIN_PREFIX) :])
    else:
        path = Path(ref).expanduser().resolve()
        ref, declared = str(path), None
    session = _session(path)
    interface = declared or inspect(session, path, overrides)
    if declared is not None:
        interface = replace(interface, preprocess=overrides.apply(interface.preprocess))
    return Model(ref, path, session, interface)


def inspect(session: Any, path: Path, overrides: Overrides) -> Interface:
    """Read the image input, output, layout and size that the model declares."""
    inputs = {i.name: i for i in session.get_inputs()}
    if overrides.input_name is not None:
        if overrides.input_name not in inputs:
            raise ModelError(
                f"{path}: no input named {overrides.input_name!r}; it has {_names(inputs)}"
            )
        image_input = inputs[overrides.input_name]
    else:
        candidates = [i for i in inputs.values() if len(i.shape or ()) == 4]
        if not candidates:
            raise ModelError(
                f"{path}: expected a 4-D image input [N,H,W,3] or [N,3,H,W], found "
                + ", ".join(f"{i.name} {list(i.shape or [])}" for i in inputs.values())
            )
        if len(candidates) > 1:
            raise ModelError(
                f"{path}: several 4-D inputs ({_names({i.name: i for i in candidates})}); "
                "name one with --input-name"
            )
        image_input = candidates[0]
    preprocess = overrides.apply(_declared_layout(path, list(image_input.shape), overrides))
    outputs = {o.name: o for o in session.get_outputs()}
    if overrides.output_name is not None:
        if overrides.output_name not in outputs:
            raise ModelError(
                f"{path}: no output named {overrides.output_name!r}; it has {_names(outputs)}"
            )
        output = outputs[overrides.output_name]
    else:
        output = outputs.get("feature_vector") or next(iter(outputs.values()))
    dimension = _declared_dimension(list(output.shape or []))
    if dimension is None:
        dimension = _probe_dimension(session, image_input.name, output.name, preprocess)
    return Interface(image_input.name, output.name, preprocess, dimension)


def _probe_dimension(
    session: Any, input_name: str, output_name: str, spec: Preprocess
) -> int | None:
    """The output size, from one blank image, when the model leaves it symbolic: so that a
    model giving vectors of the wrong size is refused up front, not at the first search."""
    try:
        blank = np.zeros(spec.input_shape(), np.float32)
        (output,) = session.run([output_name], {input_name: blank})
    except Exception:  # a model that cannot take a blank image says why when it is used
        return None
    return int(np.prod(np.shape(output)[1:])) or None


def builtin_spec(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The JSON spec shipped beside a built-in model."""
    if name not in _BUILTIN_SPECS:
        raise ModelError(f"unknown built-in model {name!r}; built-in: {', '.join(_BUILTIN_SPECS)}")
    spec_path = _MODELS_DIR / _BUILTIN_SPECS[name]
    try:
        data: dict[str, Any] = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"the built-in model {name!r} is not installed ({spec_path})") from None
    return data


def _builtin(name: str) -> tuple[Path, Interface]:
    spec = builtin_spec(name)
    path = _MODELS_DIR / spec["onnx_file"]
    interface = Interface(
        input_name=spec["input_name"],
        output_name=spec["output_name"],
        preprocess=Preprocess.from_dict(spec["preprocess"]),
        dimension=int(spec["dimension"]),
    )
    return path, interface


def _session(path: Path, threads: int | None = None) -> Any:
    """The cached session for ``path``, made anew when the file changed on disk."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    if path.is_dir():
        raise ModelError(f"{path}: expected an .onnx file, found a directory")
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _sessions.get((path, threads))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    if threads is not None:
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # InvalidProtobuf, Fail, ...: not importable as a stable API
        raise ModelError(f"{path}: not a loadable ONNX model ({one_line(exc)})") from None
    _sessions[(path, threads)] = (stamp, session)
    return session


def _declared_layout(path: Path, shape: list[Any], overrides: Overrides) -> Preprocess:
    """NHWC or NCHW and the input size, from a shape such as [N, 224, 224, 3]."""
    _, a, b, c = shape
    layout = overrides.layout
    if layout is None:
        if c == 3:
            layout = "NHWC"
        elif a == 3:
            layout = "NCHW"
        else:
            raise ModelError(
                f"{path}: cannot tell the channel axis of input shape {shape}; "
                "say --layout NHWC or --layout NCHW"
            )
    height, width = (a, b) if layout == "NHWC" else (b, c)
    # A symbolic size (e.g. "height") means the model takes any: use the common 224.
    return Preprocess(
        width=width if isinstance(width, int) and width > 0 else 224,
        height=height if isinstance(height, int) and height > 0 else 224,
        layout=layout,
    )


def _declared_dimension(shape: list[Any]) -> int | None:
    sizes = shape[1:]
    if sizes and all(isinstance(s, int) and s > 0 for s in sizes):
        return int(np.prod(sizes))
    return None


def _names(items: dict[str, Any]) -> str:
    return ", ".join(repr(name) for name in items) or "none"
