"""onnxruntime sessions, created in this one place: providers, IR/opset checks, cache, IO binding.

Why the checks: the GPU package of onnxruntime silently falls back to the CPU when CUDA/cuDNN
libraries are missing, and an old onnxruntime fails on new models with an opaque message. Here
the requested provider is validated, the provider a session really got is compared with the one
asked for, and a model's IR version and opset are compared with what this onnxruntime can run
before the session is created.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, ModelContractError, ProviderUnavailableError
from .bundle import check_runtime_support
from .contract import OUTPUT_NAME

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
PROVIDER_NAMES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}
_SHORT = {CPU: "CPU", CUDA: "CUDA", TENSORRT: "TensorRT"}
_GPU_INSTALL = (
    "install the GPU build instead of the CPU one (pip uninstall onnxruntime; pip install "
    "onnxruntime-gpu) together with an NVIDIA driver, CUDA 12.x and cuDNN 9 (onnxruntime-gpu "
    ">= 1.19)"
)
_HINTS = {
    "cuda": _GPU_INSTALL,
    "tensorrt": _GPU_INSTALL + ", plus TensorRT 10 (pip install tensorrt) on LD_LIBRARY_PATH",
}


def _ort() -> Any:
    """Import onnxruntime lazily so modules that only read specs do not pay for it."""
    import onnxruntime

    return onnxruntime


def resolve_providers(requested: str | None) -> tuple[list[str], str]:
    """Choose the execution-provider chain for a request.

    Args:
        requested: ``None``/``"auto"`` (TensorRT, then CUDA, then CPU, as available), or one
            of ``"cpu"``, ``"cuda"``, ``"tensorrt"`` to pin that provider.

    Returns:
        ``(providers, reason)``: the chain for onnxruntime (CPU always last) and a sentence
        saying why it was chosen.

    Raises:
        ProviderUnavailableError: unknown name, or a pinned provider this onnxruntime lacks.
    """
    key = (requested or "auto").strip().lower()
    available = _ort().get_available_providers()
    if key == "auto":
        gpu = [p for p in (TENSORRT, CUDA) if p in available]
        if gpu:
            return gpu + [CPU], f"auto: {_SHORT[gpu[0]]} is the fastest provider available"
        return [CPU], f"auto: this onnxruntime build has no GPU provider; for a GPU, {_GPU_INSTALL}"
    if key not in PROVIDER_NAMES:
        raise ProviderUnavailableError(
            f"unknown execution provider '{requested}': use auto, cpu, cuda or tensorrt"
        )
    name = PROVIDER_NAMES[key]
    if name not in available:
        have = ", ".join(_SHORT.get(p, p) for p in available)
        raise ProviderUnavailableError(
            f"{_SHORT[name]} was requested but onnxruntime {_ort().__version__} here only offers "
            f"{have}: {_HINTS[key]}; or choose 'auto' / 'cpu'"
        )
    chain = [name] + ([CUDA] if name == TENSORRT and CUDA in available else [])
    return chain + ([CPU] if name != CPU else []), f"{_SHORT[name]} pinned in the settings"


@dataclass(frozen=True)
class ProviderReport:
    """Which provider a session really runs on, and why."""

    requested: str  # what was asked for: auto, cpu, cuda or tensorrt
    active: str  # the provider the session really got first, e.g. "CUDAExecutionProvider"
    fallback_reason: str | None  # why it is not the preferred accelerator; None if it is
    threads: int  # intra-op threads (used by the CPU provider)
    device: str  # human-readable, e.g. "GPU 0 (CUDA)" or "CPU (8 threads)"

    @property
    def is_gpu(self) -> bool:
        return self.active in (CUDA, TENSORRT)

    def summary(self) -> str:
        """One line for a status badge or a log."""
        tail = f" - {self.fallback_reason}" if self.fallback_reason else ""
        return f"{self.device}{tail}"


def _provider_options(name: str, trt_cache_dir: Path | None) -> dict[str, str]:
    if name == CUDA:
        return {"device_id": "0"}
    if name == TENSORRT:
        cache = trt_cache_dir or _default_trt_cache()
        cache.mkdir(parents=True, exist_ok=True)
        # Building TensorRT engines takes minutes; cache them (and the timing cache) on disk.
        return {
            "device_id": "0",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    return {}


def _default_trt_cache() -> Path:
    base = os.environ.get("UNIGEO_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "unigeo" / "tensorrt"


def _session_options(threads: int) -> Any:
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1  # the encoders are one chain of ops: no inter-op parallelism
    # Idle ORT threads would otherwise spin between batches, starving the raster-reader threads
    # (bench: end-to-end/pure inference 0.44 -> 0.55) and QGIS's own UI thread.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def create_session(
    path: str | Path,
    providers: str | None = None,
    threads: int | None = None,
    trt_cache_dir: str | Path | None = None,
) -> tuple[Any, ProviderReport]:
    """Create an onnxruntime session and report the provider it really got.

    Args:
        path: the ONNX file.
        providers: ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` or ``"tensorrt"``.
        threads: intra-op threads; default ``os.cpu_count()``.
        trt_cache_dir: folder for TensorRT engine caches (default in the user cache folder).

    Returns:
        ``(session, report)``.

    Raises:
        ModelContractError: missing, corrupt or unsupported (IR/opset) model file.
        ProviderUnavailableError: a pinned provider is missing or could not start.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelContractError(f"ONNX file not found: {path}")
    check_runtime_support(path)
    chain, reason = resolve_providers(providers)
    n = int(threads) if threads else (os.cpu_count() or 1)
    if n < 1:
        raise EngineError(f"threads must be >= 1, got {threads}")
    cache = Path(trt_cache_dir) if trt_cache_dir else None
    ort = _ort()
    try:
        sess = ort.InferenceSession(
            str(path),
            sess_options=_session_options(n),
            providers=chain,
            provider_options=[_provider_options(p, cache) for p in chain],
        )
    except Exception as e:  # noqa: BLE001 - onnxruntime errors share no base class but Exception
        raise _load_error(path, e, chain) from None
    report = _make_report((providers or "auto").strip().lower(), chain, sess.get_providers(), n)
    if report.fallback_reason is None and chain[0] == CPU and report.requested == "auto":
        report = ProviderReport("auto", CPU, reason, n, report.device)
    log.info("session %s: %s", path.name, report.summary())
    return sess, report


def _load_error(path: Path, e: Exception, chain: list[str]) -> EngineError:
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    if type(e).__name__ == "EPFail":
        return ProviderUnavailableError(
            f"{_SHORT.get(chain[0], chain[0])} could not start for {path.name}: {msg}; "
            "check the GPU driver and libraries, or choose 'cpu'"
        )
    return ModelContractError(
        f"onnxruntime {_ort().__version__} cannot load {path.name}: {msg}. The file is corrupt "
        "or was written by an incompatible exporter: reinstall the model bundle or re-export it"
    )


def _make_report(requested: str, chain: list[str], got: list[str], threads: int) -> ProviderReport:
    """Compare the providers a session got with the chain asked for (silent-fallback check)."""
    active = got[0] if got else CPU
    device = f"CPU ({threads} threads)" if active == CPU else f"GPU 0 ({_SHORT.get(active)})"
    wanted = chain[0]
    if wanted == CPU or wanted in got:
        return ProviderReport(requested, active, None, threads, device)
    reason = (
        f"{_SHORT[wanted]} is installed but did not start (CUDA/cuDNN/TensorRT libraries "
        f"missing or no visible GPU), so onnxruntime fell back to {_SHORT.get(active, active)}: "
        "check nvidia-smi, the CUDA 12 / cuDNN 9 libraries on the library path"
    )
    if requested != "auto":
        raise ProviderUnavailableError(f"{reason}; or choose 'auto' / 'cpu'")
    log.warning(reason)
    return ProviderReport(requested, active, reason, threads, device)


def run_bound(session: Any, feeds: dict[str, np.ndarray], output: str = OUTPUT_NAME) -> np.ndarray:
    """Run a session; on a GPU provider the inputs and output go through IO binding.

    On CUDA/TensorRT the inputs are copied to the device once and the output stays there until
    the single copy back, instead of onnxruntime's per-run pageable copies. On the CPU this is
    a plain ``session.run``.
    """
    if session.get_providers()[0] not in (CUDA, TENSORRT):
        return session.run([output], feeds)[0]
    ort = _ort()
    binding = session.io_binding()
    keep = []  # the device buffers must outlive the run
    for name, arr in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", 0)
        keep.append(value)
        binding.bind_ortvalue_input(name, value)
    binding.bind_output(output, "cuda", 0)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


# Ops that quantise activations with one scale computed over the whole input tensor, i.e. over
# every sample of the batch: a sample's output then depends on which samples share its batch.
# ONNX stores op types as plain UTF-8 strings in the NodeProto, so the prefix is found in the bytes.
_BATCH_COUPLED_MARK = b"DynamicQuantize"  # DynamicQuantizeLinear, -MatMul, -LSTM
_SCAN_CHUNK = 1 << 22


def couples_batch(path: str | Path) -> bool:
    """True if the ONNX file has an op that couples the samples of a batch.

    ``DynamicQuantizeLinear`` (what ``quantize_dynamic`` writes before each int8 MatMul) computes
    one scale per tensor, so embeddings of the same input differ by up to ~1e-3 (aerial) and
    ~4e-2 (text) with the batch it is in; callers run such a graph one sample at a time. The
    file is scanned for the op name rather than parsed because the engine has no ``onnx``
    dependency; a false hit (those 15 bytes inside a weight) only costs speed, never correctness.

    Raises:
        ModelContractError: the file cannot be read.
    """
    mark, tail = _BATCH_COUPLED_MARK, b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_SCAN_CHUNK):
                if mark in tail + chunk:
                    return True
                tail = chunk[-(len(mark) - 1) :]  # a name split across two chunks
    except OSError as e:
        raise ModelContractError(f"cannot read the ONNX file {path}: {e.strerror}") from None
    return False


class SessionCache:
    """Sessions keyed by (file, modification time, providers, threads); thread-safe.

    A file rewritten on disk gets a new session; its stale one is dropped.
    """

    def __init__(self, trt_cache_dir: str | Path | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[tuple[str, int, str, int], tuple[Any, ProviderReport]] = {}
        self._trt_cache_dir = trt_cache_dir

    def get(
        self, path: str | Path, providers: str | None = None, threads: int | None = None
    ) -> tuple[Any, ProviderReport]:
        """Return the cached ``(session, report)`` for the file, creating it if needed."""
        p = Path(path).resolve()
        try:
            mtime = p.stat().st_mtime_ns
        except FileNotFoundError:
            raise ModelContractError(f"ONNX file not found: {p}") from None
        key = (str(p), mtime, (providers or "auto").strip().lower(), threads or os.cpu_count() or 1)
        with self._lock:
            if key in self._items:
                return self._items[key]
            for stale in [k for k in self._items if k[0] == key[0] and k[1] != mtime]:
                del self._items[stale]
            item = create_session(p, providers, threads, self._trt_cache_dir)
            self._items[key] = item
            return item

    def release(self, path: str | Path | None = None) -> int:
        """Drop the sessions of one file (all files if None); return how many were dropped."""
        with self._lock:
            want = None if path is None else str(Path(path).resolve())
            keys = [k for k in self._items if want is None or k[0] == want]
            for k in keys:
                del self._items[k]
            return len(keys)

    def clear(self) -> None:
        """Drop every session."""
        self.release(None)

    def reports(self) -> list[ProviderReport]:
        """Reports of the sessions held now, in creation order."""
        with self._lock:
            return [r for _, r in self._items.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
