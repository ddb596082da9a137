"""The model: its contract, bundles on disk, preprocessing, onnxruntime sessions and UniGeoModel.

A front end names what it feeds the model with :class:`Modality`, reads a bundle's
``bundle.json`` as a :class:`BundleSpec` (prompts, training domain, declared quality) and an
encoder's input as a :class:`Preprocess`; :class:`UniGeoModel` loads a bundle and encodes. These
are the names front ends use; the modules beside them (the field checks, bundle loading and
ONNX header reading, preprocessing, sessions) are the engine's own. Training writes its ONNX
files by :mod:`.contract` and :mod:`.bundle_spec`.
"""

from __future__ import annotations

from .bundle_spec import BundleSpec, TrainingDomain
from .contract import EncoderSpec, Modality, Preprocess
from .core import UniGeoModel

__all__ = [
    "BundleSpec",
    "EncoderSpec",
    "Modality",
    "Preprocess",
    "TrainingDomain",
    "UniGeoModel",
]
