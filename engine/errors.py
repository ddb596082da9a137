"""The engine's error hierarchy: every error carries a message a user can act on."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelContractError(EngineError):
    """A model bundle or ONNX file is missing, corrupt, or breaks the spec contract."""


class ProviderUnavailableError(EngineError):
    """A requested onnxruntime execution provider cannot be used here."""


class InputError(EngineError):
    """Bad user input: a raster, coordinates, text, a photo or a query."""


class RasterInputError(InputError):
    """A raster cannot be used: no CRS, wrong bands, empty extent, corrupt file, ..."""


class StoreError(EngineError):
    """An embedding store is unreadable, incomplete, or was written by another model."""


class CancelledError(EngineError):
    """The caller cancelled a long job; nothing partial was left behind."""


class OutputError(EngineError):
    """An output file could not be written whole (full disk, no permission, ...); the previous
    file at that path, if any, is left as it was."""


class ModelInstallError(EngineError):
    """A model bundle could not be downloaded, verified or installed; nothing was installed."""


class ModelNotInstalledError(ModelContractError):
    """No model bundle is installed or configured yet (first run of a plugin without a model)."""
