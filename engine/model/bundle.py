"""Reading model bundles: ``bundle.json``, the ONNX files' headers and specs, and the model hash.

Nothing here creates an inference session: a bundle is validated from its files alone, so an
aerial-only job never pays for loading the text tower. ONNX files are read with a small
protobuf reader (top-level fields only; the graph is skipped by seeking), because the engine
does not depend on the ``onnx`` package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelContractError
from .bundle_spec import BUNDLE_FILE, BundleSpec, check_footprints
from .contract import META_SPEC_KEY, EncoderSpec, Modality

# The engine has no `onnx` dependency, so the top-level protobuf fields are read here.
# ModelProto: 1 ir_version, 7 graph, 8 opset_import {1 domain, 2 version}, 14 metadata_props
# {1 key, 2 value}. The graph (nearly all of the file) is skipped with a seek, never read.
_MAX_META = 64 << 20


@dataclass(frozen=True)
class OnnxHeader:
    """The top-level fields of an ONNX ModelProto that decide compatibility."""

    ir_version: int  # ONNX IR version the file was written with
    opsets: dict[str, int] = field(default_factory=dict)  # opset domain -> version
    metadata: dict[str, str] = field(default_factory=dict)  # metadata_props

    @property
    def default_opset(self) -> int:
        """The version of the default (``ai.onnx``) operator set."""
        return self.opsets.get("", self.opsets.get("ai.onnx", 0))


class _Corrupt(Exception):
    """Internal: the bytes are not a well-formed protobuf message."""


def _varint(f: Any) -> int | None:
    """Read one varint; None at a clean end of stream."""
    value = shift = 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise _Corrupt("truncated varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _Corrupt("varint too long")


def _fields(f: Any, size: int, keep: set[int]) -> Iterator[tuple[int, int | bytes | None]]:
    """Yield ``(field, value)``: ints for varints, bytes for kept length-delimited fields."""
    while (tag := _varint(f)) is not None:
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise _Corrupt("field number 0")
        if wire == 0:
            yield num, _varint(f)
            continue
        if wire not in (1, 2, 5):
            raise _Corrupt(f"unsupported wire type {wire}")
        n = {1: 8, 5: 4}.get(wire) or _varint(f)
        if n is None or f.tell() + n > size:
            raise _Corrupt("a field runs past the end of the file (truncated?)")
        if wire == 2 and num in keep:
            if n > _MAX_META:
                raise _Corrupt("metadata field too large")
            yield num, f.read(n)
        else:
            f.seek(n, io.SEEK_CUR)
            yield num, None


def _pairs(data: bytes) -> dict[int, int | str]:
    out: dict[int, int | str] = {}
    for num, v in _fields(io.BytesIO(data), len(data), {1, 2}):
        out[num] = v.decode("utf-8") if isinstance(v, bytes) else v
    return out


def read_onnx_header(path: str | Path) -> OnnxHeader:
    """Read IR version, opsets and metadata of an ONNX file without loading its graph.

    Raises:
        ModelContractError: the file is missing, truncated or not an ONNX model.
    """
    path = Path(path)
    ir, opsets, meta, has_graph = 0, {}, {}, False
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            for num, v in _fields(f, size, {8, 14}):
                if num == 1 and isinstance(v, int):
                    ir = v
                elif num == 7:
                    has_graph = True
                elif num == 8 and isinstance(v, bytes):
                    d = _pairs(v)
                    opsets[str(d.get(1, ""))] = int(d.get(2, 0))
                elif num == 14 and isinstance(v, bytes):
                    d = _pairs(v)
                    meta[str(d.get(1, ""))] = str(d.get(2, ""))
    except FileNotFoundError:
        raise ModelContractError(f"ONNX file not found: {path}") from None
    except (_Corrupt, UnicodeDecodeError, ValueError) as e:
        raise ModelContractError(
            f"{path.name} is not a readable ONNX model ({e}): the file is corrupt or truncated; "
            "reinstall the model bundle or re-export it"
        ) from None
    if ir <= 0 or not has_graph or not opsets:
        raise ModelContractError(
            f"{path.name} is not an ONNX model (no IR version, graph or opset): the file is "
            "corrupt or of another format; reinstall the model bundle or re-export it"
        )
    return OnnxHeader(ir, opsets, meta)


# GraphProto: 1 node, 5 initializer, 15 sparse_initializer; NodeProto: 5 attribute;
# AttributeProto: 5 t, 6 g, 10 tensors, 11 graphs; SparseTensorProto: 1 values, 2 indices;
# TensorProto: 13 external_data {1 key, 2 value}. Only these are descended into.
_DESCEND = {"model": {7: "graph"}, "graph": {1: "node", 5: "tensor", 15: "sparse"},
            "node": {5: "attr"}, "attr": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph"},
            "sparse": {1: "tensor", 2: "tensor"}, "tensor": {}}  # fmt: skip
_MAX_DEPTH = 32


def external_data_files(path: str | Path) -> list[Path]:
    """The external-data files an ONNX model's tensors point to, resolved beside the model.

    onnxruntime reads these when it creates a session, so they are part of the model: the
    bundle hash must cover them. Tensor payloads are skipped by seeking, never read.

    Raises:
        ModelContractError: the file is corrupt, or a tensor points outside the model's folder
            or to a file that is missing.
    """
    path = Path(path)
    found: list[str] = []
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            _collect_locations(f, size, "model", found, 0)
    except (_Corrupt, UnicodeDecodeError, ValueError) as e:
        raise ModelContractError(f"{path.name} is not a readable ONNX model ({e})") from None
    out: list[Path] = []
    for loc in dict.fromkeys(found):
        target = (path.parent / loc).resolve()
        if path.parent.resolve() not in target.parents or not target.is_file():
            raise ModelContractError(
                f"{path.name} stores weights in '{loc}', which is missing or lies outside the "
                "bundle folder: reinstall the model bundle"
            )
        out.append(target)
    return out


def _collect_locations(f: Any, end: int, kind: str, found: list[str], depth: int) -> None:
    """Walk the message ``kind`` in ``f`` up to byte ``end``, appending external locations."""
    if depth > _MAX_DEPTH:
        raise _Corrupt("messages nested too deeply")
    children = _DESCEND[kind]
    while f.tell() < end and (tag := _varint(f)) is not None:
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            _varint(f)
            continue
        if wire not in (1, 2, 5):
            raise _Corrupt(f"unsupported wire type {wire}")
        n = {1: 8, 5: 4}.get(wire) or _varint(f)
        if n is None or f.tell() + n > end:
            raise _Corrupt("a field runs past the end of its message (truncated?)")
        stop = f.tell() + n
        if wire == 2 and kind == "tensor" and num == 13:
            entry = _pairs(f.read(n))
            if entry.get(1) == "location":
                found.append(str(entry.get(2, "")))
        elif wire == 2 and num in children:
            _collect_locations(f, stop, children[num], found, depth + 1)
        f.seek(stop)


def _tag(num: int, wire: int) -> bytes:
    return _enc_varint(num << 3 | wire)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _tag(num, 2) + _enc_varint(len(payload)) + payload


def probe_model_bytes(ir_version: int, opset: int) -> bytes:
    """A minimal ONNX model (float[1] -> Identity) with the given IR version and opset."""
    tensor = _ld(1, _tag(1, 0) + _enc_varint(1) + _ld(2, _ld(1, _tag(1, 0) + _enc_varint(1))))
    vi = {n: _ld(1, n.encode()) + _ld(2, tensor) for n in ("x", "y")}
    node = _ld(1, b"x") + _ld(2, b"y") + _ld(4, b"Identity")
    graph = _ld(1, node) + _ld(2, b"probe") + _ld(11, vi["x"]) + _ld(12, vi["y"])
    opset_id = _ld(1, b"") + _tag(2, 0) + _enc_varint(opset)
    return _tag(1, 0) + _enc_varint(ir_version) + _ld(7, graph) + _ld(8, opset_id)


@lru_cache(maxsize=1)
def runtime_limits() -> tuple[int, int]:
    """Return ``(max IR version, max default-domain opset)`` this onnxruntime can load.

    onnxruntime exposes no API for these, so they are probed once, by binary search over tiny
    in-memory Identity models (about a dozen loads of a few milliseconds each).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # the failing probes are expected; keep them out of the log

    def loads(ir: int, opset: int) -> bool:
        try:
            ort.InferenceSession(
                probe_model_bytes(ir, opset), so, providers=["CPUExecutionProvider"]
            )
        except Exception:  # noqa: BLE001 - any refusal means "not supported"; that is the probe
            return False
        return True

    def highest(ok: Any, lo: int, hi: int) -> int:
        while lo < hi:  # invariant: ok(lo) holds
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo

    max_ir = highest(lambda v: loads(v, 7), 3, 128)
    max_opset = highest(lambda v: loads(max_ir, v), 7, 512)
    return max_ir, max_opset


def check_runtime_support(path: str | Path, header: OnnxHeader | None = None) -> OnnxHeader:
    """Raise :class:`ModelContractError` if this onnxruntime cannot run the file's IR/opset.

    Returns:
        The file's header (read here when not given).
    """
    path = Path(path)
    header = header or read_onnx_header(path)
    max_ir, max_opset = runtime_limits()
    if header.ir_version > max_ir or header.default_opset > max_opset:
        raise ModelContractError(
            f"{path.name}: model needs IR {header.ir_version} / opset {header.default_opset} "
            f"but onnxruntime {_ort_version()} supports IR <= {max_ir} / opset <= "
            f"{max_opset}: upgrade onnxruntime (pip install -U onnxruntime) or re-export the "
            "model with a lower opset (e.g. --opset 17)"
        )
    return header


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@dataclass(frozen=True)
class LoadedBundle:
    """A validated bundle folder: its spec, each tower's spec and file, and the model hash."""

    folder: Path  # the bundle folder
    spec: BundleSpec  # bundle.json
    encoder_specs: dict[Modality, EncoderSpec]  # the spec stored inside each ONNX file
    files: dict[Modality, Path]  # modality -> ONNX file
    tokenizer_path: Path | None  # tokenizer.json, when the bundle has a text tower
    model_hash: str  # sha256 (hex) of bundle.json, every ONNX file, its external data, tokenizer
    headers: dict[Modality, OnnxHeader]  # IR version, opsets and metadata of each ONNX file

    def all_files(self) -> list[Path]:
        """Every file that defines the model, in hashing order."""
        out = [self.folder / BUNDLE_FILE]
        for m in Modality:
            if m in self.files:
                out += [self.files[m], *external_data_files(self.files[m])]
        return out + ([self.tokenizer_path] if self.tokenizer_path else [])


def load_bundle(folder: str | Path) -> LoadedBundle:
    """Read and validate a model bundle folder.

    Raises:
        ModelContractError: missing folder, bundle.json, ONNX file or tokenizer; a corrupt ONNX
            file; a missing or inconsistent encoder spec (modality, D, model name/version);
            an IR version or opset this onnxruntime cannot run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelContractError(f"model bundle folder not found: {folder}")
    spec = BundleSpec.read(folder)
    files, specs, headers = {}, {}, {}
    for modality, name in spec.encoders.items():
        path = folder / name
        if not path.is_file():
            raise ModelContractError(
                f"{BUNDLE_FILE} lists '{name}' as the {modality.value} encoder but it is missing "
                f"from {folder}: reinstall the model bundle"
            )
        headers[modality] = check_runtime_support(path)
        specs[modality] = _encoder_spec(spec, modality, path, headers[modality])
        files[modality] = path
    check_footprints(specs, str(folder / BUNDLE_FILE))
    tok = None
    if Modality.TEXT in spec.encoders:
        tok = folder / spec.tokenizer
        if not tok.is_file():
            raise ModelContractError(
                f"the bundle has a text encoder but its tokenizer '{spec.tokenizer}' is missing "
                f"from {folder}: reinstall the model bundle"
            )
    loaded = LoadedBundle(folder, spec, specs, files, tok, "", headers)
    # every file a session reads: bundle.json, each ONNX file, its external data, the tokenizer
    return dataclasses.replace(loaded, model_hash=hash_files(loaded.all_files()))


def _encoder_spec(
    bundle: BundleSpec, modality: Modality, path: Path, header: OnnxHeader
) -> EncoderSpec:
    """The spec stored in an ONNX file, checked against bundle.json."""
    raw = header.metadata.get(META_SPEC_KEY)
    if raw is None:
        raise ModelContractError(
            f"{path.name} carries no '{META_SPEC_KEY}' metadata, so its inputs and "
            "preprocessing are unknown: export the model with UniGeo's exporter"
        )
    es = EncoderSpec.from_json(raw, where=path.name)
    if es.modality is not modality:
        raise ModelContractError(
            f"{path.name} holds a {es.modality.value} encoder but {BUNDLE_FILE} lists it as "
            f"the {modality.value} encoder: fix the 'encoders' mapping in {BUNDLE_FILE}"
        )
    if es.dim != bundle.dim:
        raise ModelContractError(
            f"{path.name} outputs D={es.dim} but {BUNDLE_FILE} says dim={bundle.dim}: the "
            "towers come from different models; export all towers from one checkpoint"
        )
    if (es.model_name, es.model_version) != (bundle.name, bundle.version):
        raise ModelContractError(
            f"{path.name} was exported from model {es.model_name} {es.model_version} but "
            f"{BUNDLE_FILE} is {bundle.name} {bundle.version}: the towers are inconsistent; "
            "export all towers from one checkpoint"
        )
    return es


_HASHES: dict[tuple[tuple[str, int, int], ...], str] = {}
_HASH_LOCK = threading.Lock()


def hash_files(paths: list[Path], chunk: int = 1 << 20) -> str:
    """sha256 (hex) over the files' names and contents, streamed.

    The result is memoised on (path, size, mtime) so a bundle is hashed once per process;
    names (not folders) enter the hash, so a copied bundle keeps its hash.
    """
    key = tuple((str(p.resolve()), (st := p.stat()).st_size, st.st_mtime_ns) for p in paths)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode("utf-8") + b"\0")
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    with _HASH_LOCK:
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
