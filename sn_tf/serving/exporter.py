"""A trained model dir -> a self-contained TF SavedModel (CLI: ``python -m sn_tf.export``).

    export_model("runs/fcn", "exports/fcn", checkpoint="best")

Library: :func:`export_model` (``export_model(model_dir, export_dir, checkpoint="best")``),
:func:`load_export` (used by ``sn_tf.predict``), :func:`serving_dtype`, :func:`check_model_info`.

The export directory::

    saved_model.pb, variables/, assets/   the SavedModel (written by keras.export.ExportArchive)
    model_info.json                       verbatim copy of the model dir's ModelInfo (image
                                          types and bands expected, input dtypes, mean/std,
                                          stride, post-processing parameters, versions)
    export_info.json                      export time, TF/Keras/sn_tf versions, source
                                          checkpoint, the serving signature and its conventions

The serving signature ``serve`` (also the SavedModel signature of that name):

* input ``image``: raw bands ``[B, H, W, C]`` at ANY height and width, C = ``ModelInfo.num_bands``
  (the selected bands of the image types stacked in ``ModelInfo.image_types`` order), in the
  stored dtype of the image types (``ModelInfo.input_dtypes``; float32 when the stacked
  types have different dtypes: cast each type's values to float32 before stacking).
* inside: cast to float32; normalise per channel as the training pipeline does,
  ``x * (1 / std) + (-mean / std)`` in float32 (a channel with std 0 uses std 1, as in
  ``sn_tf.input.pipeline``); ZERO-pad the normalised image at the bottom and right up to a multiple
  of ``ModelInfo.stride`` (i.e. padding with the band mean, exactly what the evaluation
  pipeline does for the validation score the model was selected on; reflect padding cannot
  handle images smaller than the padding). A model that normalises itself
  (``ModelInfo.normalizes_input``, trained on raw batches: its first layer is the
  normalisation) gets the float32 raw values padded with the band mean instead, which its
  normalisation maps to exactly 0: the same model input, not normalised twice. Then run
  the model; crop every output back to the
  input's extent: full-resolution outputs to ``[H, W]``, outputs at a coarser stride ``f``
  (DetectNet grids, f = ``ModelInfo.cell_size``, 16 or 8) to ``[ceil(H / f), ceil(W / f)]``.
  Padding is at the bottom/right, so output pixel/cell (i, j) keeps its position.
* a second signature ``serve_float32`` is the same function with a float32 input (values
  as stored: a uint16 1234 is sent as 1234.0; exact, since float32 holds every integer below
  2^24) and the same outputs: TF Serving's REST API decodes JSON numbers into the
  signature's dtype and has no uint16, so REST clients call ``serve_float32``; gRPC clients
  send the stored dtype to ``serve`` (a 650 x 650 x 8 uint16 tile is 6.8 MB as a
  TensorProto, against ~15-20 MB of JSON text).
* output: the model's raw outputs as a dict of float32 tensors, e.g. FCN ``footprint``
  (logits) and ``sdf`` (pixels) ``[B, H, W, 1]``; DetectNet ``coverage`` ``[B, h, w, 1]`` and
  ``bbox`` ``[B, h, w, 4]``, plus ``orient`` ``[B, h, w, 3]`` for an oriented DetectNet
  (BUILD_NOTES.md section 1; listed in export_info.json). Training-only outputs
  (the family's ``training_only_outputs``: DetectNet's auxiliary ``interior``) are not served, and
  the graph does not compute them. Turn them into polygons with
  ``sn_tf.head.polygons.outputs_to_buildings`` and ``ModelInfo.postprocess``.

Keras's bilinear ``UpSampling2D`` cannot be traced with an unknown height and width (its
resize checks ``size > 0`` in Python); the exported graph therefore uses a numerically
identical layer (``tf.image.resize`` of the dynamic shape, the same op Keras calls) sharing
the trained layers and weights.

"""

from __future__ import annotations

import datetime
import json
import pathlib
import shutil

import numpy as np

from sn_tf.training import model_dir as md
from sn_tf.utils import families
from sn_tf.utils.provenance import package_versions
from sn_tf.utils.errors import SnTfError

SERVE = "serve"
#: The same function with a float32 input, for clients that cannot send uint16 (TF Serving's
#: REST/JSON API has no uint16; every uint16 value is exact in float32).
SERVE_FLOAT32 = "serve_float32"
EXPORT_INFO = "export_info.json"
EXPORT_FORMAT = "sn_tf.export/1"
SAVED_MODEL_PB = "saved_model.pb"


class ExportError(SnTfError):
    """A problem with a model dir, checkpoint, model_info.json or export dir (names the file)."""


# ----------------------------------------------------------------------------------------------
# ModelInfo checks (no TF)


def serving_dtype(info: md.ModelInfo) -> str:
    """Dtype of the serving input: the image types' common stored dtype, else "float32"."""
    dtypes = {info.input_dtypes[t] for t in info.image_types}
    return dtypes.pop() if len(dtypes) == 1 else "float32"


def normalization(info: md.ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) float32 [C] with ``normalised = raw * scale + bias`` (std 0 -> 1)."""
    from sn_tf.input.normalization import coefficients_from_mean_std

    std = np.asarray(info.std, np.float64)
    return coefficients_from_mean_std(info.mean, np.where(std > 0, std, 1.0))


def served_outputs(model, info: md.ModelInfo) -> list[str]:
    """Names of the model's outputs that ``serve`` returns (all but the training-only ones)."""
    only_training = families.get(info.kind).training_only_outputs
    return [n for n in model.output_names if n not in only_training]


def check_model_info(info: md.ModelInfo, where: str = md.MODEL_INFO) -> None:
    """Raise :class:`ExportError` (prefixed with ``where``) when ``info`` is inconsistent.

    Checks: known kind; non-empty, duplicate-free image types, each with 1-based band indices
    and a numpy dtype; mean/std of length ``num_bands``, finite, std >= 0; positive integer
    stride (a multiple of 16 for DetectNet); a DetectNet ``cell_size`` that the model can
    have (``sn_tf.input.cells``; None = 16) and that divides the stride; post-processing
    parameters known to ``sn_tf.head.polygons.postprocess_params``.
    """
    from sn_tf.head.polygons import postprocess_params

    def fail(problem: str):
        raise ExportError(f"{where}: wrong model info: {problem}")

    try:
        family = families.get(info.kind)
    except families.FamilyError as err:
        fail(str(err))
    types = list(info.image_types or [])
    if not types or len(set(types)) != len(types):
        fail(f"image_types must be a non-empty list without duplicates, got {types!r}")
    for t in types:
        bands = (info.bands or {}).get(t)
        if not bands or not all(isinstance(b, int) and b >= 1 for b in bands):
            fail(f"bands[{t!r}] must be a non-empty list of 1-based band indices, got {bands!r}")
        dtype = (info.input_dtypes or {}).get(t)
        try:
            np.dtype(dtype)
        except TypeError:
            fail(f"input_dtypes[{t!r}] is not a numpy dtype: {dtype!r}")
    c = info.num_bands
    for name in ("mean", "std"):
        values = np.asarray(getattr(info, name), dtype=np.float64).ravel()
        if values.shape != (c,) or not np.all(np.isfinite(values)):
            fail(f"{name} must hold {c} finite values (one per input channel), "
                 f"got {getattr(info, name)!r}")
    if np.any(np.asarray(info.std, np.float64) < 0):
        fail(f"std must be >= 0, got {info.std!r}")
    if not isinstance(info.stride, int) or info.stride < 1:
        fail(f"stride must be a positive integer, got {info.stride!r}")
    if family.input_multiple and info.stride % family.input_multiple:
        fail(f"a {family.name} input must be padded to a multiple of {family.input_multiple}, "
             f"got stride {info.stride}")
    if family.cell_size is not None and info.cell_size is not None:
        from sn_tf.input.cells import check_cell_size

        try:
            check_cell_size(info.cell_size)
        except ValueError as err:
            fail(str(err))
    try:
        postprocess_params(info.kind, info.postprocess)
    except (ValueError, TypeError) as err:
        fail(f"postprocess: {err}")


def load_model_info(directory) -> md.ModelInfo:
    """``ModelInfo.load(directory)`` with every problem turned into an :class:`ExportError`."""
    path = pathlib.Path(directory) / md.MODEL_INFO
    try:
        info = md.ModelInfo.load(directory)
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None
    except json.JSONDecodeError as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None
    except (TypeError, ValueError) as err:
        raise ExportError(f"{path}: wrong model info ({err})") from None
    check_model_info(info, str(path))
    return info


# ----------------------------------------------------------------------------------------------
# The serving graph


def _dynamic_upsampling_class():
    """A Keras layer equal to bilinear ``UpSampling2D`` that traces with unknown H and W."""
    import keras

    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()

    class DynamicUpSampling2D(keras.layers.Layer):
        """``tf.image.resize(x, [H * sy, W * sx], method)``: what Keras's TF backend runs for
        ``UpSampling2D(size, interpolation)`` (channels_last, no antialias), with the target
        size computed from the dynamic shape. x: [B, H, W, C] -> [B, H*sy, W*sx, C]."""

        def __init__(self, size, interpolation, **kwargs):
            super().__init__(**kwargs)
            self.size = tuple(size)
            self.interpolation = interpolation

        def call(self, x):
            shape = tf.shape(x)
            target = tf.stack([shape[1] * self.size[0], shape[2] * self.size[1]])
            return tf.image.resize(x, target, method=self.interpolation)

        def compute_output_shape(self, shape):
            h, w = shape[1], shape[2]
            return (shape[0], None if h is None else h * self.size[0],
                    None if w is None else w * self.size[1], shape[3])

    return DynamicUpSampling2D


def traceable_model(model):
    """``model`` with bilinear UpSampling2D layers swapped for a dynamic-shape equivalent.

    Every other layer is shared with ``model`` (same objects, same weights); nested models
    (e.g. behind ``sn_tf.modeling.model_input.with_input_stage``) are rebuilt the same way. Models
    without such layers are returned unchanged.
    """
    import keras

    def is_resize(layer) -> bool:
        return (isinstance(layer, keras.layers.UpSampling2D)
                and layer.interpolation != "nearest")

    if not any(is_resize(layer) for layer in model._flatten_layers()):
        return model
    if any(isinstance(layer, keras.layers.UpSampling2D) and layer.data_format != "channels_last"
           for layer in model._flatten_layers()):
        raise ExportError("channels_first UpSampling2D layers are not supported by the export")
    dynamic = _dynamic_upsampling_class()

    def clone(layer):
        if is_resize(layer):
            return dynamic(layer.size, layer.interpolation, name=layer.name,
                           dtype=layer.dtype_policy)
        return layer

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def output_factor(input_size, output_size):
    """Integer stride f of an output relative to its (padded) input size (TF int tensors)."""
    return input_size // output_size


def serving_function(model, info: md.ModelInfo):
    """The ``serve`` function: raw ``[B, H, W, C]`` -> dict of float32 outputs (module doc).

    Returns a plain Python function of one tensor; the caller wraps it with its input
    signature (``tf.TensorSpec([None, None, None, C], serving_dtype(info))``).
    """
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    scale, bias = normalization(info)
    stride = int(info.stride)
    net = traceable_model(model)
    names = list(model.output_names)
    served = set(served_outputs(model, info))
    if info.normalizes_input:
        from sn_tf.input.normalization import normalization_mean_std

        mean = normalization_mean_std(scale, bias)[0].astype(np.float32)

    def serve(image):
        shape = tf.shape(image)
        height, width = shape[1], shape[2]
        pads = [[0, 0], [0, (-height) % stride], [0, (-width) % stride], [0, 0]]
        if info.normalizes_input:  # raw values, padded with the band mean
            inside = tf.pad(tf.ones(tf.concat([shape[:3], [1]], 0), tf.bool), pads)
            x = tf.where(inside, tf.pad(tf.cast(image, tf.float32), pads), tf.constant(mean))
        else:
            x = tf.cast(image, tf.float32) * tf.constant(scale) + tf.constant(bias)
            x = tf.pad(x, pads)
        outputs = net(x, training=False)
        if not isinstance(outputs, dict):
            outputs = dict(zip(names, outputs if isinstance(outputs, (list, tuple))
                               else [outputs]))
        padded = tf.shape(x)
        result = {}
        for name, y in outputs.items():
            if name not in served:
                continue
            out_shape = tf.shape(y)
            fy = output_factor(padded[1], out_shape[1])
            fx = output_factor(padded[2], out_shape[2])
            result[name] = tf.cast(y[:, :(height + fy - 1) // fy, :(width + fx - 1) // fx],
                                   tf.float32)
        return result

    return serve


# ----------------------------------------------------------------------------------------------
# Export


def _check_model(model, info: md.ModelInfo, checkpoint_path) -> None:
    """The checkpoint must take ``num_bands`` channels and have the outputs of its kind."""
    channels = model.inputs[0].shape[-1]
    if channels != info.num_bands:
        raise ExportError(f"{checkpoint_path}: the model takes {channels} input channels but "
                          f"model_info.json describes {info.num_bands} "
                          f"({', '.join(f'{t}: {info.bands[t]}' for t in info.image_types)})")
    family = families.get(info.kind)
    need = set(family.head_outputs)
    missing = need - set(model.output_names)
    if missing:
        raise ExportError(f"{checkpoint_path}: model outputs {sorted(model.output_names)} lack "
                          f"{sorted(missing)} required for kind {info.kind!r} in model_info.json")
    from sn_tf.head.detections import ORIENTED_GROUPINGS
    from sn_tf.head.polygons import postprocess_params

    grouping = postprocess_params(info.kind, info.postprocess).get("grouping")
    if "orient" in model.output_names and grouping not in ORIENTED_GROUPINGS:
        raise ExportError(f"{checkpoint_path}: the model has an 'orient' output (oriented "
                          f"DetectNet) but model_info.json's postprocess grouping is "
                          f"{grouping!r}; oriented outputs need one of {ORIENTED_GROUPINGS}")
    if not family.full_resolution:
        _check_cell_size(model, info, checkpoint_path)


def _check_cell_size(model, info: md.ModelInfo, checkpoint_path) -> None:
    """The DetectNet's ``coverage`` grid must have ``info.grid_cell_size()`` pixel cells
    (measured on one zero input of two input multiples a side)."""
    side = 2 * int(info.stride)
    probe = np.zeros((1, side, side, info.num_bands), np.float32)
    rows = int(model(probe, training=False)["coverage"].shape[1])
    cell = info.grid_cell_size()
    if rows * cell != side:
        raise ExportError(f"{checkpoint_path}: the model's coverage grid has {side // rows} px "
                          f"cells but model_info.json says cell_size {info.cell_size!r} "
                          f"({cell} px)")


def load_checkpoint(model_dir, checkpoint: str = "best"):
    """(Keras model, ModelInfo, checkpoint path) of a model dir; ExportError on any problem."""
    import keras

    import sn_tf.modeling.model_input
    import sn_tf.modeling  # noqa: F401  (both register custom objects for loading)

    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir}: model dir not found")
    if checkpoint not in ("best", "last"):
        raise ExportError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    info = load_model_info(model_dir)
    try:
        path = md.checkpoint(model_dir, checkpoint)
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # keras raises many types for a damaged or foreign file
        raise ExportError(f"{path}: cannot load the Keras checkpoint ({type(err).__name__}: "
                          f"{err})") from None
    _check_model(model, info, path)
    return model, info, path


def _prepare_export_dir(export_dir: pathlib.Path, overwrite: bool) -> None:
    """Refuse a non-empty export dir unless ``overwrite`` and it is an earlier sn_tf export."""
    if export_dir.exists() and not export_dir.is_dir():
        raise ExportError(f"{export_dir}: exists and is not a directory")
    if export_dir.is_dir() and any(export_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{export_dir}: not empty; choose a new export dir or overwrite")
        if not (export_dir / EXPORT_INFO).is_file():
            raise ExportError(f"{export_dir}: not empty and not an sn_tf export; refusing to "
                              "overwrite it")
        shutil.rmtree(export_dir)


def export_info_doc(info: md.ModelInfo, model_dir, checkpoint_path, output_names) -> dict:
    """The ``export_info.json`` document (see the module docstring)."""
    return {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "source_model_dir": str(pathlib.Path(model_dir).resolve()),
        "checkpoint": str(pathlib.Path(checkpoint_path).resolve()),
        "signature": {
            "name": SERVE,
            "input": {"name": "image", "shape": ["B", "H", "W", info.num_bands],
                      "dtype": serving_dtype(info),
                      "channels": [f"{t}:{b}" for t in info.image_types for b in info.bands[t]]},
            "outputs": sorted(output_names),
            "normalization": ("inside the model (its first layer): (x - mean) / std, float32"
                              if info.normalizes_input else
                              "x * (1/std) + (-mean/std), float32, std 0 -> 1 "
                              "(model_info.json)"),
            "padding": f"{'the band mean before' if info.normalizes_input else 'zeros after'} "
                       f"normalisation (normalised: 0) at the bottom/right to a "
                       f"multiple of {info.stride}; outputs cropped back",
        },
        "signatures": {SERVE: serving_dtype(info), SERVE_FLOAT32: "float32"},
    }


def export_model(model_dir, export_dir, checkpoint: str = "best",
                 overwrite: bool = False) -> pathlib.Path:
    """Export the ``checkpoint`` ("best" or "last") of ``model_dir`` as a SavedModel.

    Writes the SavedModel with the ``serve`` endpoint/signature (module docstring), a copy
    of ``model_info.json`` and ``export_info.json`` into ``export_dir`` and returns its path.
    Raises :class:`ExportError` for a missing model dir or checkpoint, a wrong
    model_info.json, a checkpoint that does not match it, or a non-empty ``export_dir``
    (``overwrite=True`` replaces an earlier sn_tf export).
    """
    import keras

    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    model, info, ckpt = load_checkpoint(model_dir, checkpoint)
    export_dir = pathlib.Path(export_dir)
    _prepare_export_dir(export_dir, overwrite)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, None, None, info.num_bands], serving_dtype(info), name="image")
    function = serving_function(model, info)
    archive.add_endpoint(SERVE, function, input_signature=[spec])
    spec32 = tf.TensorSpec([None, None, None, info.num_bands], tf.float32, name="image")
    archive.add_endpoint(SERVE_FLOAT32, function, input_signature=[spec32])
    archive.write_out(str(export_dir), verbose=False)
    shutil.copyfile(pathlib.Path(model_dir) / md.MODEL_INFO, export_dir / md.MODEL_INFO)
    doc = export_info_doc(info, model_dir, ckpt, served_outputs(model, info))
    (export_dir / EXPORT_INFO).write_text(json.dumps(doc, indent=1) + "\n")
    return export_dir


def load_export(export_dir):
    """(serve function, ModelInfo, export_info dict) of an export dir.

    ``serve(image)`` takes a ``[B, H, W, C]`` tensor/array of ``serving_dtype(info)`` and
    returns a dict of float32 tensors. Raises :class:`ExportError` when ``export_dir`` is not
    an sn_tf export.
    """
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    export_dir = pathlib.Path(export_dir)
    if not (export_dir / SAVED_MODEL_PB).is_file():
        raise ExportError(f"{export_dir}: no {SAVED_MODEL_PB}; is it the output of "
                          "sn_tf.export?")
    info = load_model_info(export_dir)
    info_path = export_dir / EXPORT_INFO
    try:
        export_info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{info_path}: not found; is {export_dir} the output of "
                          "sn_tf.export?") from None
    except json.JSONDecodeError as err:
        raise ExportError(f"{info_path}: not valid JSON ({err})") from None
    try:
        loaded = tf.saved_model.load(str(export_dir))
    except Exception as err:  # TF raises several types for damaged SavedModels
        raise ExportError(f"{export_dir}: cannot load the SavedModel ({type(err).__name__}: "
                          f"{err})") from None
    endpoint = getattr(loaded, SERVE, None)
    if endpoint is None:
        raise ExportError(f"{export_dir}: the SavedModel has no '{SERVE}' endpoint")

    def serve(image):
        # ``loaded`` stays referenced here: it owns the variables the endpoint reads
        return loaded.serve(image)

    return serve, info, export_info
