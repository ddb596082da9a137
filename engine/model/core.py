"""UniGeoModel: the facade that loads a bundle and encodes tiles, text, photos and coordinates.

Every caller (CLI, queries, embedding jobs, the QGIS plugin) goes through this class. Sessions
are created lazily per modality, so an aerial-only job never loads the text tower.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, InputError, ModelContractError
from .bundle import LoadedBundle, load_bundle
from .bundle_spec import BundleSpec
from .contract import OUTPUT_NAME, EncoderSpec, Modality
from .preprocess import (
    TextTokenizer,
    band_presence,
    check_text_meaning,
    normalize_dsm,
    normalize_image,
    prepare_photo,
    validate_latlon,
)
from .sessions import ProviderReport, SessionCache, couples_batch, resolve_providers, run_bound

log = logging.getLogger(__name__)

_TILE_MODALITIES = (Modality.AERIAL, Modality.STREETVIEW, Modality.DSM)


class UniGeoModel:
    """A loaded model bundle with lazily created encoder sessions.

    Attributes:
        bundle: the bundle's ``bundle.json`` spec.
        dim: the shared embedding dimension D.
        model_hash: sha256 of the bundle's files; embedding stores record it.
        folder: the bundle folder.
    """

    def __init__(
        self, loaded: LoadedBundle, providers: str | None = None, threads: int | None = None
    ) -> None:
        resolve_providers(providers)  # fail now, not at the first query, on a bad pin
        self.loaded = loaded
        self.bundle: BundleSpec = loaded.spec
        self.dim: int = loaded.spec.dim
        self.model_hash: str = loaded.model_hash
        self.folder: Path = loaded.folder
        self.providers = providers
        self.threads = threads
        self._cache = SessionCache()
        self._lock = threading.Lock()
        self._checked: set[Modality] = set()
        self._coupled: dict[Modality, bool] = {}
        self._tokenizer: TextTokenizer | None = None

    @classmethod
    def load(
        cls, folder: str | Path, providers: str | None = None, threads: int | None = None
    ) -> UniGeoModel:
        """Load and validate a bundle folder (no session is created yet).

        Args:
            folder: the bundle folder (with ``bundle.json``).
            providers: ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` or ``"tensorrt"``.
            threads: intra-op CPU threads; default ``os.cpu_count()``.

        Raises:
            ModelContractError: the bundle is missing, corrupt or inconsistent.
            ProviderUnavailableError: a pinned provider is not available.
        """
        return cls(load_bundle(folder), providers, threads)

    def __repr__(self) -> str:
        mods = ", ".join(m.value for m in self.modalities)
        return f"UniGeoModel({self.bundle.name} {self.bundle.version}, D={self.dim}, [{mods}])"

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """The modalities this bundle has an encoder for, in enum order."""
        return tuple(m for m in Modality if m in self.loaded.files)

    def has(self, modality: Modality) -> bool:
        """True if the bundle has an encoder for ``modality``."""
        return Modality(modality) in self.loaded.files

    def spec(self, modality: Modality) -> EncoderSpec:
        """The encoder spec of ``modality``.

        Raises:
            InputError: the bundle has no encoder for it.
        """
        m = Modality(modality)
        if m not in self.loaded.encoder_specs:
            have = ", ".join(x.value for x in self.modalities)
            raise InputError(
                f"model {self.bundle.name} has no {m.value} encoder (it has {have}): use "
                "another query type or a model bundle that includes it"
            )
        return self.loaded.encoder_specs[m]

    def encoder_session(self, modality: Modality) -> Any:
        """The onnxruntime session of ``modality``, created on first use and checked.

        Raises:
            ModelContractError: the file cannot be loaded or its inputs/output differ from its spec.
        """
        spec = self.spec(modality)
        sess, _ = self._cache.get(self.loaded.files[spec.modality], self.providers, self.threads)
        if spec.modality not in self._checked:
            _check_io(sess, spec, self.loaded.files[spec.modality].name)
            self._checked.add(spec.modality)
        return sess

    def batch_coupled(self, modality: Modality) -> bool:
        """True if the encoder's graph makes a sample's embedding depend on its batch.

        Dynamic int8 graphs quantise activations with one scale per batch; the model then
        encodes such a tower one sample at a time, so a tile or text gets the same embedding
        whatever else is embedded with it (extent invariance). Detected once per tower.

        Raises:
            InputError: the bundle has no encoder for ``modality``.
        """
        m = self.spec(modality).modality
        with self._lock:
            if m not in self._coupled:
                path = self.loaded.files[m]
                self._coupled[m] = couples_batch(path)
                if self._coupled[m]:
                    log.info(
                        "%s has dynamic int8 (batch-coupled) ops: encoding one sample per "
                        "inference call so results do not depend on the batch",
                        path.name,
                    )
            return self._coupled[m]

    def tokenizer(self) -> TextTokenizer:
        """The text tokenizer, loaded on first use."""
        spec = self.spec(Modality.TEXT)
        with self._lock:
            if self._tokenizer is None:
                p = spec.preprocess
                path = self.loaded.tokenizer_path
                assert path is not None  # load_bundle guarantees it for a text tower
                self._tokenizer = TextTokenizer(path, p.max_text_length, p.lowercase)
            return self._tokenizer

    def encode_tiles(
        self,
        modality: Modality,
        chips: np.ndarray,
        batch_size: int = 32,
        band_mask: Any = None,
    ) -> np.ndarray:
        """Embed image or DSM chips.

        Args:
            modality: ``AERIAL`` / ``STREETVIEW`` (chips float ``[N, C, H, W]`` in [0, 1]) or
                ``DSM`` (``[N, 1, H, W]`` heights in metres); NaN marks nodata.
            chips: the chips, matching the spec's bands and size. A band the source lacks is
                an all-NaN plane: an encoder with a ``band_mask`` input (format 2) masks it.
            batch_size: chips per inference call (one for a :meth:`batch_coupled` tower).
            band_mask: optional ``[C]`` or ``[N, C]`` 0/1 presence of the spec's bands; by
                default it is read from the chips (:func:`~engine.model.preprocess.band_presence`).

        Returns:
            float32 ``[N, D]``, rows L2-normalised.

        Raises:
            InputError: wrong modality, shape, band count, size or dtype; an all-nodata DSM chip.
        """
        m = Modality(modality)
        if m not in _TILE_MODALITIES:
            raise InputError(f"encode_tiles takes aerial, streetview or dsm chips, not {m.value}")
        spec = self.spec(m)
        x = np.asarray(chips)
        _check_chips(spec, x)
        p = spec.preprocess
        name = next(iter(spec.inputs))
        if m is Modality.DSM:

            def feeds(s: slice) -> dict[str, np.ndarray]:
                return {name: normalize_dsm(x[s], p.dsm_center, p.dsm_scale_m)}
        elif "band_mask" in spec.inputs:
            bm = band_presence(x, band_mask)

            def feeds(s: slice) -> dict[str, np.ndarray]:
                return {name: normalize_image(x[s], p.mean, p.std), "band_mask": bm[s]}
        else:

            def feeds(s: slice) -> dict[str, np.ndarray]:
                return {name: normalize_image(x[s], p.mean, p.std)}

        return self._batched(m, x.shape[0], feeds, batch_size)

    def encode_text(
        self, texts: Sequence[str], templates: Sequence[str] | None = None, batch_size: int = 64
    ) -> np.ndarray:
        """Embed texts, optionally averaged over prompt templates.

        Args:
            texts: non-empty strings.
            templates: strings with one ``"{}"`` each; a text's embedding is then the
                re-normalised mean of its template embeddings.
            batch_size: texts per inference call (one for a :meth:`batch_coupled` tower).

        Returns:
            float32 ``[N, D]``, rows L2-normalised.

        Raises:
            InputError: an empty text or a template without exactly one ``"{}"``.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        tmpl = list(templates) if templates else ["{}"]
        bad = [t for t in tmpl if not isinstance(t, str) or t.count("{}") != 1]
        if bad:
            raise InputError(f"prompt template {bad[0]!r} must contain exactly one '{{}}'")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InputError(f"text {i} is empty: type a description of the place")
        tok = self.tokenizer()
        for t in texts:
            if (warning := check_text_meaning(tok, t)) is not None:
                log.warning(warning)
        expanded = [t.replace("{}", text) for text in texts for t in tmpl]

        def feeds(s: slice) -> dict[str, np.ndarray]:
            ids, mask = tok.encode(expanded[s])
            return {"input_ids": ids, "attention_mask": mask}

        emb = self._batched(Modality.TEXT, len(expanded), feeds, batch_size)
        if len(tmpl) == 1:
            return emb
        return _l2(emb.reshape(len(texts), len(tmpl), self.dim).mean(axis=1))

    def encode_photos(self, photos: Sequence[Any], batch_size: int = 16) -> np.ndarray:
        """Embed street-level photos (``H x W x 3`` uint8 arrays or image paths).

        Returns:
            float32 ``[N, D]``, rows L2-normalised.

        Raises:
            InputError: a photo cannot be read.
        """
        spec = self.spec(Modality.STREETVIEW)
        p = spec.preprocess
        if len(p.bands) != 3:
            raise ModelContractError(
                f"the streetview encoder expects {len(p.bands)} bands, but photos are RGB"
            )
        photos = list(photos)

        def feeds(s: slice) -> dict[str, np.ndarray]:
            x = np.stack([prepare_photo(ph, p.size) for ph in photos[s]])
            return {"pixels": normalize_image(x, p.mean, p.std)}

        return self._batched(Modality.STREETVIEW, len(photos), feeds, batch_size)

    def encode_gps(self, lat: Any, lon: Any, batch_size: int = 4096) -> np.ndarray:
        """Embed WGS84 coordinates (degrees; longitudes are wrapped into [-180, 180)).

        Returns:
            float32 ``[N, D]``, rows L2-normalised.

        Raises:
            InputError: NaN/inf coordinates, |lat| > 90, or mismatched lengths.
        """
        la, lo = validate_latlon(lat, lon)
        latlon = np.stack([la, lo], axis=1)

        def feeds(s: slice) -> dict[str, np.ndarray]:
            return {"latlon": latlon[s]}

        return self._batched(Modality.GPS, latlon.shape[0], feeds, batch_size)

    def provider_report(self) -> ProviderReport:
        """Which provider the sessions run on, and why.

        With no session open yet, the smallest encoder is loaded so the report is measured,
        not guessed. If towers differ, the report of one that fell back is returned.
        """
        reports = self._cache.reports()
        if not reports:
            smallest = min(self.modalities, key=lambda m: self.loaded.files[m].stat().st_size)
            self.encoder_session(smallest)
            reports = self._cache.reports()
        fallen = [r for r in reports if r.fallback_reason]
        return fallen[0] if fallen else reports[0]

    def close(self) -> None:
        """Release every session and the tokenizer; the model can still be used (it reloads)."""
        self._cache.clear()
        self._checked.clear()
        self._coupled.clear()
        with self._lock:
            self._tokenizer = None

    def __enter__(self) -> UniGeoModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batched(
        self,
        modality: Modality,
        n: int,
        feeds: Callable[[slice], dict[str, np.ndarray]],
        batch_size: int,
    ) -> np.ndarray:
        """Run ``feeds(slice)`` batch by batch and gather ``[n, D]`` unit-norm rows."""
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        sess = self.encoder_session(modality)
        # A batch-coupled graph gives a sample a different embedding in every batch: run it alone.
        step = 1 if self.batch_coupled(modality) else int(batch_size)
        for start in range(0, n, step):
            s = slice(start, min(n, start + step))
            y = np.asarray(self._run(sess, modality, feeds(s)), dtype=np.float32)
            if y.shape != (s.stop - s.start, self.dim):
                raise ModelContractError(
                    f"the {modality.value} encoder returned shape {y.shape}, expected "
                    f"{(s.stop - s.start, self.dim)}: the ONNX file breaks its spec; re-export it"
                )
            out[s] = y
        if not np.isfinite(out).all():
            raise ModelContractError(
                f"the {modality.value} encoder produced NaN/inf: the model file may be corrupt "
                "or overflow in reduced precision; try the fp32 model"
            )
        return _l2(out)

    @staticmethod
    def _run(sess: Any, modality: Modality, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One inference call; onnxruntime's own exceptions become an EngineError."""
        try:
            return run_bound(sess, feeds, OUTPUT_NAME)
        except EngineError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime errors share no base but Exception
            raise EngineError(
                f"onnxruntime failed while running the {modality.value} encoder: "
                f"{str(e).strip()[-300:]}; on a GPU that ran out of memory, lower the batch size"
            ) from e


def _l2(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (exported models already are; fp16 ones only nearly)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


def _check_chips(spec: EncoderSpec, x: np.ndarray) -> None:
    """Raise InputError unless ``x`` is float ``[N, C, H, W]`` matching the spec."""
    p = spec.preprocess
    c = 1 if spec.modality is Modality.DSM else len(p.bands)
    what = "heights in metres" if c == 1 else f"bands ({', '.join(p.bands)}) scaled to [0, 1]"
    if x.ndim != 4:
        raise InputError(
            f"{spec.modality.value} chips must be [N, {c}, {p.size}, {p.size}] ({what}), "
            f"got shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"{spec.modality.value} chips must be floating point ({what}), got {x.dtype}"
        )
    if x.shape[1] != c:
        names = ", ".join(p.bands) if p.bands else "surface height"
        raise InputError(
            f"the {spec.modality.value} encoder expects {c} band(s) ({names}), got {x.shape[1]}: "
            "select the bands the model was trained on, in that order"
        )
    if x.shape[2:] != (p.size, p.size):
        raise InputError(
            f"the {spec.modality.value} encoder expects {p.size}x{p.size} px chips, got "
            f"{x.shape[2]}x{x.shape[3]}: tile the raster at the model's size"
            + (f" and GSD ({p.gsd_m:g} m)" if p.gsd_m else "")
        )


def _check_io(sess: Any, spec: EncoderSpec, fname: str) -> None:
    """The session's input and output names must be the spec's (export bugs surface here)."""
    got_in = [i.name for i in sess.get_inputs()]
    got_out = [o.name for o in sess.get_outputs()]
    if sorted(got_in) != sorted(spec.inputs) or OUTPUT_NAME not in got_out:
        raise ModelContractError(
            f"{fname} has inputs {got_in} and outputs {got_out} but its spec promises inputs "
            f"{list(spec.inputs)} and output '{OUTPUT_NAME}': re-export the model"
        )
