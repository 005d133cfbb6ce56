"""Building TensorRT engines, apart from running them (see ``engines.trt_engine``).

Everything up to the TensorRT calls is plain Python and is tested without TensorRT: the
optimisation-profile shapes, the cache key, the plan-file container and its invalidation rules,
and (in ``engines.trt_ops``) the op-support check run before every build.

A built engine is stored in an aed plan file: ``AEDPLAN\\x01`` + a little-endian uint32 header
length + a JSON header (cache key and its fields, the model config, the engine's SHA-256) + the
serialised TensorRT engine. A plan whose key differs from the one wanted (another ONNX file,
TensorRT version, GPU, precision or profile), or whose bytes do not match their checksum, is
rebuilt, never loaded.

Example:
    >>> profile = make_profile(config, window_s=1.0, max_batch=32)        # doctest: +SKIP
    >>> plan = ensure_engine("model.onnx", profile=profile, precision="fp16")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engines.base import ModelFileError, missing_dependency
from engines.onnx_info import onnx_model_config, read_onnx_info, sha256_file
from engines.trt_ops import OpSupportReport, OpTable, check_op_support, load_op_table, load_supported_ops
from realtime.config import ModelConfig, is_finite_number, seconds_to_frames
from realtime.errors import ConfigError, EngineError

__all__ = [
    "PRECISIONS", "ProfileShapes", "GpuInfo", "BuildEnv", "OpSupportReport", "make_profile",
    "cache_key_fields", "cache_key", "write_plan", "read_plan", "plan_status", "stale_reasons", "ensure_engine",
    "default_cache_dir",
    "detect_env", "import_tensorrt", "import_cudart", "cuda_check", "OpTable", "load_op_table", "load_supported_ops",
    "check_op_support",
    "build_serialized_engine",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
PLAN_MAGIC = b"AEDPLAN\x01"
PLAN_FORMAT = 1


# --------------------------------------------------------------------------- optional imports
def import_tensorrt() -> Any:
    """Import ``tensorrt`` or raise the documented :class:`MissingDependencyError`."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise missing_dependency("tensorrt", "the tensorrt engine", e) from e
    return trt


def import_cudart() -> Any:
    """Import the CUDA runtime bindings of ``cuda-python`` (either layout) or raise the documented error."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as e:
            raise missing_dependency("cuda", "the tensorrt engine (CUDA runtime via cuda-python)", e) from e
    return cudart


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a ``cuda-python`` call result ``(err, *values)``, raising ``RuntimeError`` on a CUDA error."""
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != cudart.cudaError_t.cudaSuccess:
        _, msg = cudart.cudaGetErrorString(err)
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise EngineError(f"CUDA error in {what}: {getattr(err, 'name', err)}: {text}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


# --------------------------------------------------------------------------- profile shapes
@dataclass(frozen=True)
class ProfileShapes:
    """A TensorRT optimisation profile over batch and time for the ``(B, T, F)`` input.

    Attributes:
        input_name: the ONNX input the profile is for.
        min: smallest ``(B, T, F)``.
        opt: the shape TensorRT tunes for (batch ``opt_batch`` at the configured window).
        max: largest ``(B, T, F)``.
    """

    input_name: str
    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"input_name": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProfileShapes":
        return cls(d["input_name"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]


def make_profile(config: ModelConfig, *, input_name: str = "fbank", window_s: float | None = None,
                 min_window_s: float | None = None, max_window_s: float | None = None, max_batch: int = 32,
                 opt_batch: int = 1) -> ProfileShapes:
    """Profile shapes from the model's accepted range, with opt at the configured window.

    Args:
        config: the model config (``input`` range, ``frontend.frame_shift_ms``, ``window.window_s``).
        input_name: name of the ONNX input.
        window_s: the window TensorRT tunes for; default the config's window (1 s where absent).
        min_window_s: shortest window the engine accepts; default the model's ``t_min``.
        max_window_s: longest window the engine accepts; default the model's ``t_max``.
        max_batch: largest batch the engine accepts.
        opt_batch: the batch TensorRT tunes for (1: one live stream).

    Raises:
        ValueError: a window outside the model's range, or an inconsistent min/opt/max; the message
            names the accepted range in seconds and frames.
    """
    config = ModelConfig.from_dict(config)
    f, t_lo, t_hi = config.num_mel_bins, config.input.t_min, config.input.t_max
    shift = config.frontend.frame_shift_ms
    rng = f"[{t_lo * shift / 1000:g}, {t_hi * shift / 1000:g}] s ({t_lo}..{t_hi} frames)"

    def frames(s: float | None, default: int, what: str) -> int:
        if s is None:
            return default
        if not (is_finite_number(s) and s > 0):
            raise ConfigError(f"{what} must be a positive number of seconds, got {s!r}")
        t = seconds_to_frames(s, config.frontend)
        if not (t_lo <= t <= t_hi):
            raise ConfigError(f"{what} of {s:g} s = {t} frames is outside the model's accepted range {rng}")
        return t

    if window_s is None:
        window_s = config.window.window_s
    t_min = frames(min_window_s, t_lo, "--min-window")
    t_max = frames(max_window_s, t_hi, "--max-window")
    t_opt = frames(window_s, t_lo, "--window")
    if not (t_min <= t_opt <= t_max):
        raise ConfigError(f"expected min window <= window <= max window, got {t_min} <= {t_opt} <= {t_max} frames "
                         f"(the model accepts {rng})")
    if int(max_batch) < 1 or not (1 <= int(opt_batch) <= int(max_batch)):
        raise ConfigError(f"expected 1 <= opt batch <= max batch, got opt {opt_batch}, max {max_batch}")
    return ProfileShapes(input_name, (1, t_min, f), (int(opt_batch), t_opt, f), (int(max_batch), t_max, f))


# --------------------------------------------------------------------------- build environment and cache key
@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: TensorRT engines are specific to the device."""

    name: str
    compute_capability: str


@dataclass(frozen=True)
class BuildEnv:
    """TensorRT version and GPU; part of the cache key."""

    trt_version: str
    gpu: GpuInfo


def detect_env(device: int = 0) -> BuildEnv:
    """Read the TensorRT version and the name and compute capability of CUDA device ``device``."""
    trt = import_tensorrt()
    cudart = import_cudart()
    prop = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return BuildEnv(trt.__version__, GpuInfo(name.strip("\x00 "), f"{prop.major}.{prop.minor}"))


def cache_key_fields(onnx_sha256: str, env: BuildEnv, precision: str, profile: ProfileShapes) -> dict[str, Any]:
    """Everything an engine depends on; any change gives another key."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"format": PLAN_FORMAT, "onnx_sha256": onnx_sha256, "tensorrt": env.trt_version,
            "gpu": env.gpu.name, "compute_capability": env.gpu.compute_capability,
            "precision": precision, "profile": profile.to_dict()}


def cache_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of :func:`cache_key_fields`."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$AED_CACHE_DIR/tensorrt``, else ``$XDG_CACHE_HOME/aed/tensorrt``, else ``~/.cache/aed/tensorrt``."""
    if os.environ.get("AED_CACHE_DIR"):
        return Path(os.environ["AED_CACHE_DIR"]) / "tensorrt"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "aed" / "tensorrt"


# --------------------------------------------------------------------------- plan container
def write_plan(path: str | Path, engine: bytes, header: dict[str, Any]) -> None:
    """Write an aed plan file atomically (a reader never sees half a file)."""
    path = Path(path)
    header = dict(header, engine_sha256=hashlib.sha256(engine).hexdigest(), engine_bytes=len(engine))
    head = json.dumps(header, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(PLAN_MAGIC + struct.pack("<I", len(head)) + head)
            f.write(engine)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_plan(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Read an aed plan file into ``(header, engine_bytes)``.

    Raises:
        ModelFileError: not an aed plan (e.g. a raw ``trtexec`` engine or another file), truncated or
            corrupt; the message says how to rebuild it.
    """
    path = Path(path)
    rebuild = f"rebuild it with: aed build-engine MODEL.onnx -o {path.name}"
    data = path.read_bytes()
    if not data.startswith(PLAN_MAGIC):
        raise ModelFileError(f"{str(path)!r} is not an aed TensorRT plan (no {PLAN_MAGIC[:7].decode()} header; "
                             f"foreign or raw engines are never loaded); {rebuild}")
    n0 = len(PLAN_MAGIC)
    if len(data) < n0 + 4:
        raise ModelFileError(f"{str(path)!r} is truncated; {rebuild}")
    (hlen,) = struct.unpack("<I", data[n0:n0 + 4])
    try:
        header = json.loads(data[n0 + 4:n0 + 4 + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{str(path)!r} has a corrupt header ({e}); {rebuild}") from None
    engine = data[n0 + 4 + hlen:]
    if not isinstance(header, dict) or header.get("engine_sha256") != hashlib.sha256(engine).hexdigest():
        raise ModelFileError(f"{str(path)!r} is corrupt: the engine bytes do not match their checksum; {rebuild}")
    for k in ("key", "key_fields", "config"):
        if k not in header:
            raise ModelFileError(f"{str(path)!r} has no {k!r} in its header; {rebuild}")
    return header, engine


def plan_status(path: str | Path, key: str, fields: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Whether the plan at ``path`` can be used for ``key``: ``(True, "")`` or ``(False, why not)``.

    ``fields`` (the wanted :func:`cache_key_fields`) only serves to name what changed.
    """
    path = Path(path)
    if not path.is_file():
        return False, "no cached engine"
    try:
        header, _ = read_plan(path)
    except (ModelFileError, OSError) as e:
        return False, str(e)
    if header["key"] != key:
        changed = _diff_names(header.get("key_fields", {}), fields or {}) if fields else ""
        return False, f"stale engine (built for a different {changed or 'configuration'})"
    return True, ""


def _diff_names(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def stale_reasons(header: dict[str, Any], env: BuildEnv) -> list[str]:
    """Why a plan header does not fit this machine (empty when it does)."""
    f = header.get("key_fields", {})
    out = []
    if f.get("format") != PLAN_FORMAT:
        out.append(f"plan format {f.get('format')} (this aed writes {PLAN_FORMAT})")
    if f.get("tensorrt") != env.trt_version:
        out.append(f"TensorRT {f.get('tensorrt')} (this machine has {env.trt_version})")
    if (f.get("gpu"), f.get("compute_capability")) != (env.gpu.name, env.gpu.compute_capability):
        out.append(f"GPU {f.get('gpu')} sm {f.get('compute_capability')} "
                   f"(this machine has {env.gpu.name} sm {env.gpu.compute_capability})")
    if cache_key(f) != header.get("key"):
        out.append("a key that does not match its fields")
    return out


# --------------------------------------------------------------------------- building
def build_serialized_engine(onnx_path: Path, profile: ProfileShapes, precision: str, *,
                            timing_cache: Path | None = None, workspace_mb: int | None = None) -> bytes:
    """Parse the ONNX file and build a serialised TensorRT engine (needs TensorRT and a GPU).

    FP16 keeps LayerNormalization (TensorRT's INormalizationLayer, from opset 17) and Softmax in
    FP32, with ``OBEY_PRECISION_CONSTRAINTS`` so that TensorRT honours it.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT's ONNX parser rejected {str(onnx_path)!r}: {errors}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [profile.input_name]:
        raise ModelFileError(f"expected one network input {profile.input_name!r}, got {names}")
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        n_norm, n_soft = _keep_fp32(trt, network)
        log.info("fp16 build: %d normalisation and %d softmax layers kept in fp32", n_norm, n_soft)
    elif precision != "fp32":
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s does not fit this TensorRT/GPU; starting a fresh one", timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {str(onnx_path)!r} (see the TensorRT log above)")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _keep_fp32(trt: Any, network: Any) -> tuple[int, int]:
    n_norm = n_soft = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.__class__ = trt.INormalizationLayer  # the Python API returns ILayer; downcast to reach it
            layer.compute_precision = trt.float32
            n_norm += 1
        elif layer.type == trt.LayerType.SOFTMAX:
            n_soft += 1
        else:
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
    return n_norm, n_soft


BuildFn = Callable[[Path, ProfileShapes, str, Path], bytes]


def ensure_engine(onnx_path: str | Path, plan_path: str | Path | None = None, *, precision: str = "fp32",
                  window_s: float | None = None, min_window_s: float | None = None,
                  max_window_s: float | None = None, max_batch: int = 32, opt_batch: int = 1,
                  cache_dir: str | Path | None = None, rebuild: bool = False, check_ops: bool = True,
                  env: BuildEnv | None = None, build: BuildFn | None = None) -> Path:
    """Return a plan for ``onnx_path`` that fits this machine, building it only when needed.

    Args:
        onnx_path: the exported model (config in its ``aed_config`` metadata or ``config.json`` beside it).
        plan_path: where the plan goes; default ``cache_dir/<stem>-<key[:16]>.plan``. An existing plan
            there is reused only when its stored key equals the wanted key.
        precision: ``"fp32"`` or ``"fp16"``.
        window_s, min_window_s, max_window_s, max_batch, opt_batch: see :func:`make_profile`.
        cache_dir: engines and the timing cache; default :func:`default_cache_dir`.
        rebuild: build even when a fitting plan exists.
        check_ops: run :func:`check_op_support` first (where the operator list is available).
        env: TensorRT version and GPU (default: detected); ``build``: the builder (default
            :func:`build_serialized_engine`). Both are parameters so the caching rules are testable.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {str(onnx_path)!r} does not exist")
    try:
        info = read_onnx_info(onnx_path)
    except ValueError as e:
        raise ModelFileError(str(e)) from None
    config = onnx_model_config(onnx_path, info)
    if len(info.inputs) != 1:
        raise ModelFileError(f"{str(onnx_path)!r}: expected one input (B, T, F), got {list(info.inputs)}")
    profile = make_profile(config, input_name=next(iter(info.inputs)), window_s=window_s,
                           min_window_s=min_window_s, max_window_s=max_window_s, max_batch=max_batch,
                           opt_batch=opt_batch)
    env = env or detect_env()
    fields = cache_key_fields(sha256_file(onnx_path), env, precision, profile)
    key = cache_key(fields)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    plan = Path(plan_path) if plan_path is not None else cache_dir / f"{onnx_path.stem}-{key[:16]}.plan"
    ok, why = plan_status(plan, key, fields)
    if ok and not rebuild:
        log.info("using cached TensorRT engine %s", plan)
        return plan
    if check_ops:
        try:
            report = check_op_support(info)
        except FileNotFoundError as e:
            log.warning("skipping the op-support check: %s", e)
        else:
            if not report.ok:
                raise ModelFileError(f"{str(onnx_path)!r} cannot be built with TensorRT: {report.summary()}")
    log.info("building TensorRT engine %s (%s; %s)", plan, precision, "forced" if ok else why)
    timing = cache_dir / f"timing-{_slug(env.trt_version)}-{_slug(env.gpu.name)}-sm{env.gpu.compute_capability}.cache"
    engine = (build or _default_build)(onnx_path, profile, precision, timing)
    write_plan(plan, engine, {"key": key, "key_fields": fields, "config": config.to_dict(), "onnx": onnx_path.name,
                              "outputs": info.outputs})
    return plan


def _default_build(onnx_path: Path, profile: ProfileShapes, precision: str, timing: Path) -> bytes:
    return build_serialized_engine(onnx_path, profile, precision, timing_cache=timing)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", s).strip("_")
