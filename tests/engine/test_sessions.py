"""Sessions: provider resolution and fallback reports, IR/opset checks, the cache, IO binding."""

from __future__ import annotations

import os
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from engine.errors import ModelContractError, ProviderUnavailableError
from engine.model import sessions
from engine.model.bundle import probe_model_bytes, read_onnx_header, runtime_limits
from engine.model.contract import META_SPEC_KEY, EncoderSpec, Modality
from engine.model.sessions import (
    CPU,
    CUDA,
    TENSORRT,
    SessionCache,
    create_session,
    resolve_providers,
    run_bound,
)
from tests.fixtures.analytic_bundle import break_bundle, make_analytic_bundle


@pytest.fixture()
def bundle(tmp_path):
    return make_analytic_bundle(tmp_path / "b", modalities=[Modality.AERIAL, Modality.GPS])


def _with_providers(monkeypatch, names):
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(names))


def test_resolve_auto_and_cpu_on_this_machine():
    chain, reason = resolve_providers(None)
    assert chain[-1] == CPU and reason.startswith("auto:")
    if not {CUDA, TENSORRT} & set(ort.get_available_providers()):
        assert chain == [CPU] and "onnxruntime-gpu" in reason
    assert resolve_providers("CPU ") == ([CPU], "CPU pinned in the settings")
    assert resolve_providers("auto")[0] == chain


def test_resolve_prefers_tensorrt_then_cuda(monkeypatch):
    _with_providers(monkeypatch, [TENSORRT, CUDA, CPU])
    chain, reason = resolve_providers("auto")
    assert chain == [TENSORRT, CUDA, CPU] and "TensorRT" in reason
    assert resolve_providers("cuda")[0] == [CUDA, CPU]
    assert resolve_providers("tensorrt")[0] == [TENSORRT, CUDA, CPU]
    _with_providers(monkeypatch, [CUDA, CPU])
    assert resolve_providers(None)[0] == [CUDA, CPU]


def test_pinning_a_missing_provider_says_what_to_install(monkeypatch):
    _with_providers(monkeypatch, [CPU])
    with pytest.raises(ProviderUnavailableError, match=r"onnxruntime-gpu.*CUDA 12.*cuDNN 9"):
        resolve_providers("cuda")
    with pytest.raises(ProviderUnavailableError, match="TensorRT"):
        resolve_providers("tensorrt")
    with pytest.raises(ProviderUnavailableError, match="unknown execution provider 'rocm'"):
        resolve_providers("rocm")


def test_create_session_reports_cpu_and_threads(bundle):
    sess, rep = create_session(bundle / "aerial.onnx", "cpu", threads=1)
    assert rep.active == CPU and rep.threads == 1 and rep.requested == "cpu"
    assert rep.fallback_reason is None and rep.device == "CPU (1 threads)" and not rep.is_gpu
    x = np.zeros((2, 4, 16, 16), dtype=np.float32)
    feeds = {"pixels": x, "band_mask": np.ones((2, 4), dtype=np.float32)}  # contract v2
    assert sess.run(["embedding"], feeds)[0].shape == (2, 8)
    _, rep = create_session(bundle / "gps.onnx")
    assert rep.threads == (os.cpu_count() or 1) and rep.requested == "auto"


def _cpu_only_session(real):
    """An InferenceSession stand-in that drops GPU providers, as a broken CUDA install does."""

    def make(path, sess_options=None, providers=None, provider_options=None):
        return real(path, sess_options=sess_options, providers=[CPU])

    return make


def test_silent_gpu_fallback_is_reported(monkeypatch, bundle):
    _with_providers(monkeypatch, [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", _cpu_only_session(ort.InferenceSession))
    _, rep = create_session(bundle / "aerial.onnx")
    assert rep.active == CPU and rep.requested == "auto"
    assert "CUDA is installed but did not start" in rep.fallback_reason
    assert "fell back to CPU" in rep.summary()
    with pytest.raises(ProviderUnavailableError, match="did not start"):
        create_session(bundle / "aerial.onnx", "cuda")


def test_gpu_session_that_works_has_no_fallback(monkeypatch):
    rep = sessions._make_report("auto", [CUDA, CPU], [CUDA, CPU], 4)
    assert rep.fallback_reason is None and rep.is_gpu and rep.device == "GPU 0 (CUDA)"
    rep = sessions._make_report("auto", [TENSORRT, CUDA, CPU], [CUDA, CPU], 4)
    assert rep.active == CUDA and "TensorRT is installed but did not start" in rep.fallback_reason


def test_tensorrt_options_cache_engines(tmp_path):
    opts = sessions._provider_options(TENSORRT, tmp_path / "trt")
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    assert sessions._provider_options(CPU, None) == {}


def test_header_reader_matches_onnx(bundle):
    path = bundle / "aerial.onnx"
    h = read_onnx_header(path)
    m = onnx.load(str(path))
    assert h.ir_version == m.ir_version and h.default_opset == 17
    spec = EncoderSpec.from_json(h.metadata[META_SPEC_KEY])
    assert spec.modality is Modality.AERIAL and spec.dim == 8


def test_runtime_limits_and_probe_models():
    max_ir, max_opset = runtime_limits()
    assert max_ir >= 8 and max_opset >= 17
    probe = onnx.load_from_string(probe_model_bytes(max_ir, max_opset))
    assert probe.ir_version == max_ir and probe.opset_import[0].version == max_opset
    assert probe.graph.node[0].op_type == "Identity"


@pytest.mark.parametrize(
    "how, pattern",
    [
        ("bad_opset", r"needs IR \d+ / opset 99 but onnxruntime .*\(pip install -U onnxruntime"),
        ("bad_ir", r"needs IR 99 / opset 17 .*--opset 17"),
        ("truncated", "corrupt or truncated"),
        ("garbage", "aerial.onnx"),
    ],
)
def test_unloadable_files_are_contract_errors(bundle, how, pattern):
    path = break_bundle(bundle, how)
    with pytest.raises(ModelContractError, match=pattern):
        create_session(path)


def test_onnxruntime_load_failure_is_wrapped(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "bad.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelContractError, match="cannot load bad.onnx.*re-export"):
        create_session(path)
    with pytest.raises(ModelContractError, match="not found"):
        create_session(tmp_path / "absent.onnx")


def test_session_cache_reuse_release_and_reload(bundle):
    cache = SessionCache()
    a1, _ = cache.get(bundle / "aerial.onnx", threads=1)
    a2, _ = cache.get(bundle / "aerial.onnx", threads=1)
    g, _ = cache.get(bundle / "gps.onnx", threads=1)
    assert a1 is a2 and len(cache) == 2
    assert cache.get(bundle / "aerial.onnx", threads=2)[0] is not a1 and len(cache) == 3
    st = (bundle / "aerial.onnx").stat()
    os.utime(bundle / "aerial.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    a3, _ = cache.get(bundle / "aerial.onnx", threads=1)
    assert a3 is not a1 and len(cache) == 2  # the two stale aerial sessions were dropped
    assert cache.release(bundle / "aerial.onnx") == 1 and len(cache) == 1
    assert [r.active for r in cache.reports()] == [CPU]
    cache.clear()
    assert len(cache) == 0 and cache.release() == 0
    with pytest.raises(ModelContractError, match="not found"):
        cache.get(bundle / "missing.onnx")


def test_run_bound_cpu_is_plain_run(bundle):
    sess, _ = create_session(bundle / "gps.onnx", "cpu", 1)
    latlon = np.array([[10.0, 20.0]], dtype=np.float32)
    out = run_bound(sess, {"latlon": latlon})
    assert np.array_equal(out, sess.run(["embedding"], {"latlon": latlon})[0])


def test_run_bound_cuda_uses_io_binding(monkeypatch):
    sess = mock.MagicMock()
    sess.get_providers.return_value = [CUDA, CPU]
    binding = sess.io_binding.return_value
    binding.copy_outputs_to_cpu.return_value = [np.ones((2, 8), dtype=np.float32)]
    made = []
    monkeypatch.setattr(
        ort.OrtValue,
        "ortvalue_from_numpy",
        staticmethod(lambda arr, dev, idx: made.append((arr.shape, dev, idx)) or f"ov{len(made)}"),
    )
    out = run_bound(sess, {"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 1), np.int64)})
    assert out.shape == (2, 8)
    assert made == [((2, 3), "cuda", 0), ((2, 1), "cuda", 0)]
    binding.bind_ortvalue_input.assert_has_calls([mock.call("a", "ov1"), mock.call("b", "ov2")])
    binding.bind_output.assert_called_once_with("embedding", "cuda", 0)
    sess.run_with_iobinding.assert_called_once_with(binding)
    sess.run.assert_not_called()
