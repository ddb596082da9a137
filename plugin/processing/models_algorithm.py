"""Processing algorithms ``unigeo:installmodel`` and ``unigeo:models``: the model manager.

Thin adapters over ``engine.library.install`` and ``engine.library.installed``, the same functions the
Model manager dialog and ``python -m engine models`` call.
"""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ...engine.library import (
    DEFAULT_BUNDLE,
    active_bundle,
    install_bundle,
    list_bundles,
    remove_bundle,
    set_active,
)
from ..settings import Settings, first_run_message
from .base import UniGeoAlgorithm
from .common import canceled_of, engine_errors, progress_of


class _ModelsBase(UniGeoAlgorithm):
    """MODELS_FOLDER (advanced) and its resolution, shared by both algorithms."""

    MODELS_FOLDER = "MODELS_FOLDER"

    def add_models_folder_param(self) -> None:
        p = QgsProcessingParameterFile(
            self.MODELS_FOLDER,
            self.tr("Models folder (default: <QGIS profile>/unigeo/models)"),
            behavior=QgsProcessingParameterFile.Folder,
            optional=True,
        )
        p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(p)

    def models_root(self, parameters, context) -> Path:
        folder = self.parameterAsFile(parameters, self.MODELS_FOLDER, context)
        return Path(folder) if folder else Settings.load().models_path()


class InstallModelAlgorithm(_ModelsBase):
    """Install a bundle from a zip, a folder or an https URL (empty: the default model)."""

    NAME = "installmodel"
    SOURCE = "SOURCE"
    SHA256 = "SHA256"
    ACTIVATE = "ACTIVATE"
    REPLACE = "REPLACE"
    ALLOW_HTTP = "ALLOW_HTTP"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(
            QgsProcessingParameterString(
                self.SOURCE,
                self.tr("Bundle .zip, bundle folder or https URL (empty: the default model)"),
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.SHA256, self.tr("sha256 of the zip"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.ACTIVATE, self.tr("Use it"), defaultValue=True)
        )
        for name, label in ((self.REPLACE, "Replace an installed bundle with other files"),
                            (self.ALLOW_HTTP, "Allow plain http to a remote mirror")):  # fmt: skip
            p = QgsProcessingParameterBoolean(name, self.tr(label), defaultValue=False)
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.add_models_folder_param()
        self.addOutput(QgsProcessingOutputFolder("FOLDER", self.tr("Installed bundle folder")))
        self.addOutput(QgsProcessingOutputString("NAME", self.tr("Bundle folder name")))
        self.addOutput(QgsProcessingOutputString("SHA256", self.tr("Verified sha256")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        source = self.parameterAsString(parameters, self.SOURCE, context).strip()
        sha = self.parameterAsString(parameters, self.SHA256, context).strip() or None
        kwargs = dict(
            activate=self.parameterAsBool(parameters, self.ACTIVATE, context),
            replace=self.parameterAsBool(parameters, self.REPLACE, context),
            allow_http=self.parameterAsBool(parameters, self.ALLOW_HTTP, context),
            progress=progress_of(feedback),
            is_canceled=canceled_of(feedback),
            message=feedback.pushInfo,
        )
        if not source:
            source, sha = Settings.load().default_model_url(), DEFAULT_BUNDLE.sha256
            kwargs["expected_size"] = DEFAULT_BUNDLE.size
        with engine_errors():
            res = install_bundle(source, self.models_root(parameters, context), sha, **kwargs)
        for line in res.bundle.card_lines():
            feedback.pushInfo(line)
        folder = res.bundle.folder
        return {"FOLDER": str(folder), "NAME": folder.name, "SHA256": res.sha256 or ""}


class ModelsAlgorithm(_ModelsBase):
    """List the installed bundles with their card; optionally choose the active one or remove one."""

    NAME = "models"
    ACTION = "ACTION"
    ACTIONS = ("list", "use", "remove")
    BUNDLE = "NAME"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(
            QgsProcessingParameterEnum(
                self.ACTION, self.tr("Action"), options=list(self.ACTIONS), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BUNDLE, self.tr("Bundle (for use / remove)"), optional=True
            )
        )
        self.add_models_folder_param()
        self.addOutput(QgsProcessingOutputString("MODELS", self.tr("Installed bundles (JSON)")))
        self.addOutput(QgsProcessingOutputString("ACTIVE", self.tr("Active bundle folder")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        action = self.ACTIONS[self.parameterAsEnum(parameters, self.ACTION, context)]
        name = self.parameterAsString(parameters, self.BUNDLE, context).strip()
        root = self.models_root(parameters, context)
        if action != "list" and not name:
            raise QgsProcessingException(self.tr(f"Give the NAME of the bundle to {action}"))
        with engine_errors():
            if action == "use":
                feedback.pushInfo(f"active: {set_active(root, name)}")
            elif action == "remove":
                feedback.pushInfo(f"removed: {remove_bundle(root, name)}")
            bundles = list_bundles(root)
        for b in bundles:
            feedback.pushInfo("\n".join(b.card_lines()))
        if not bundles:
            feedback.pushInfo(first_run_message(root))
        active = active_bundle(root)
        models = json.dumps([b.to_dict() for b in bundles])
        return {"MODELS": models, "ACTIVE": str(active) if active else ""}
