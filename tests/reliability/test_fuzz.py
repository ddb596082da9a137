"""Fuzzing (hypothesis, bounded) of every reader of untrusted files: only domain errors escape.

Readers: ``BundleSpec.from_dict``/``read``, ``EncoderSpec.from_json``, the ONNX header reader
``engine.model.bundle.read_onnx_header``, and the dataset readers of ``training.data.format``. Each
input is a mutation of a valid document (values swapped for random JSON, keys dropped, bytes
flipped, inserted or cut), so most runs get deep into the parser before failing.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.model.bundle import read_onnx_header
from engine.model.bundle_spec import BundleSpec
from engine.model.contract import META_SPEC_KEY, EncoderSpec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Any]:
    """Valid documents to mutate: bundle.json, one encoder spec, one ONNX file's bytes."""
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    folder = make_analytic_bundle(tmp_path_factory.mktemp("fuzz_bundle"))
    onnx_bytes = (folder / "aerial.onnx").read_bytes()
    spec = read_onnx_header(folder / "aerial.onnx").metadata[META_SPEC_KEY]
    return {
        "bundle": json.loads((folder / "bundle.json").read_text()),
        "spec": json.loads(spec),
        "onnx": onnx_bytes,
    }


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a nested dict/list document."""
    out = [prefix]
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """A deep copy of ``doc`` with 1-3 random edits: replace a value, or delete a key."""
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return data.draw(json_values)
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values)
    return doc


def _mutate_bytes(raw: bytes, data: st.DataObject) -> bytes:
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "byte"]))
        i = data.draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "byte" and b:
            b[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[i:]
        else:
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


def _only_domain_errors(fn, *args) -> None:
    try:
        fn(*args)
    except EngineError as e:
        assert str(e), "a domain error must carry a message"


@FUZZ
@given(st.data())
def test_bundle_spec_from_dict(seeds, data):
    _only_domain_errors(BundleSpec.from_dict, _mutate(seeds["bundle"], data))


@FUZZ
@given(json_values)
def test_bundle_spec_from_any_json_value(value):
    _only_domain_errors(BundleSpec.from_dict, value)


@FUZZ
@given(st.data())
def test_bundle_spec_read_of_mutated_bytes(seeds, data):
    raw = json.dumps(seeds["bundle"]).encode()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bundle.json").write_bytes(_mutate_bytes(raw, data))
        _only_domain_errors(BundleSpec.read, tmp)


@FUZZ
@given(st.data())
def test_encoder_spec_from_json(seeds, data):
    _only_domain_errors(EncoderSpec.from_json, json.dumps(_mutate(seeds["spec"], data)))


@FUZZ
@given(st.data())
def test_encoder_spec_from_mutated_text(seeds, data):
    raw = json.dumps(seeds["spec"]).encode()
    text = _mutate_bytes(raw, data).decode("utf-8", errors="replace")
    _only_domain_errors(EncoderSpec.from_json, text)


def test_encoder_spec_deep_nesting_is_a_domain_error():
    with pytest.raises(EngineError, match="not valid JSON"):
        EncoderSpec.from_json("[" * 100_000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_onnx_header_of_mutated_bytes(seeds, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(_mutate_bytes(seeds["onnx"], data))
        _only_domain_errors(read_onnx_header, path)


@FUZZ
@given(st.binary(max_size=256))
def test_onnx_header_of_random_bytes(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(raw)
        _only_domain_errors(read_onnx_header, path)


# -- datasets -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset_info() -> dict[str, Any]:
    from training.data.format import DatasetInfo

    return json.loads(
        DatasetInfo(name="fuzz", n_samples=2, splits={"train": 2}, areas={"a": 2}).to_json()
    )


@FUZZ
@given(st.data())
def test_dataset_info_read(dataset_info, data):
    from training.data.format import DatasetInfo

    with tempfile.TemporaryDirectory() as tmp:
        doc = _mutate(dataset_info, data)
        raw = json.dumps(doc).encode()
        if data.draw(st.booleans()):
            raw = _mutate_bytes(raw, data)
        (Path(tmp) / "dataset.json").write_bytes(raw)
        _only_domain_errors(DatasetInfo.read, tmp)


refs = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["aerial/a.npy", "aerial/a.npy#3", "../a.npy", "/a.npy", "a\\b.npy", "C:a.npy"]
    ),
    st.builds(lambda a, b: f"{a}/{b}.npy#{3}", st.text(max_size=6), st.text(max_size=6)),
)


@FUZZ
@given(st.lists(st.one_of(st.none(), refs), min_size=1, max_size=6), st.data())
def test_manifest_tables(values, data):
    import pyarrow as pa

    from training.data.format import check_table

    col = data.draw(st.sampled_from(["aerial", "dsm", "streetview"]))
    table = pa.table({"sample_id": [str(i) for i in range(len(values))], col: values})
    _only_domain_errors(check_table, table, "samples.parquet", False)


def _parquet_seed() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"sample_id": ["a", "b"], "aerial": ["aerial/a.npy", None]}), buf)
    return buf.getvalue()


@settings(max_examples=30, deadline=None, phases=[Phase.generate])  # no shrinking
@given(st.data())
def test_corrupt_manifest_file(data):
    from training.data.format import read_manifest

    raw = _parquet_seed()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "samples.parquet").write_bytes(_mutate_bytes(raw, data))
        _only_domain_errors(read_manifest, tmp)
