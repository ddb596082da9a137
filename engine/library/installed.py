"""The installed model bundles of a models folder: list them with their card, choose one, remove one.

A models folder holds one sub-folder per bundle (``<name>-<version>``) and ``active.json``
naming the active one. Hidden entries (``.install.*`` staging folders of an install in
progress, ``.remove.*`` of a removal) are never listed, so a partial install never looks
installed. Listing reads ``bundle.json`` only (fast); installing validated the ONNX files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import InputError, ModelContractError
from ..model.bundle_spec import BUNDLE_FILE, BundleSpec

ACTIVE_FILE = "active.json"
LICENCE_KEYS = ("license", "licence")  # optional bundle.json fields the card shows


@dataclass(frozen=True)
class InstalledBundle:
    """One bundle folder of a models folder, with the summary of its model card."""

    folder: Path  # the bundle folder
    name: str  # bundle.json name (the folder name when bundle.json is unreadable)
    version: str  # bundle.json version
    active: bool  # True when active.json names this folder
    modalities: tuple[str, ...] = ()  # towers it has
    domain: str = ""  # training domain in words
    accuracies: tuple[str, ...] = ()  # declared figures, e.g. "zero-shot land use 1.5 % (...)"
    size_bytes: int = 0  # bytes on disk
    licence: str = ""  # declared licence, "" when bundle.json declares none
    description: str = ""  # bundle.json description
    provenance: dict[str, str] = field(default_factory=dict)  # modality -> real/derived/synthetic
    problem: str = ""  # why the bundle cannot be used ("" when bundle.json is valid)

    @property
    def key(self) -> str:
        """The folder name: what ``use`` and ``remove`` take."""
        return self.folder.name

    def card_lines(self) -> list[str]:
        """The card summary as short lines for a terminal, a log or a tooltip."""
        lines = [f"{self.name} {self.version}{'  (active)' if self.active else ''}"]
        if self.problem:
            return [*lines, f"  unusable: {self.problem}"]
        prov = ", ".join(f"{m} ({self.provenance[m]})" if m in self.provenance else m
                         for m in self.modalities)  # fmt: skip
        lines += [
            f"  modalities: {prov}",
            f"  training domain: {self.domain}",
            f"  declared accuracy: {'; '.join(self.accuracies) or 'none declared'}",
            f"  size: {human_size(self.size_bytes)}",
            f"  licence: {self.licence or 'not declared in bundle.json'}",
            f"  folder: {self.folder}",
        ]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``python -m engine models list --json``)."""
        return {
            "key": self.key,
            "folder": str(self.folder),
            "name": self.name,
            "version": self.version,
            "active": self.active,
            "modalities": list(self.modalities),
            "training_domain": self.domain,
            "accuracies": list(self.accuracies),
            "size_bytes": self.size_bytes,
            "licence": self.licence,
            "description": self.description,
            "provenance": dict(self.provenance),
            "problem": self.problem,
        }


def human_size(n: int) -> str:
    """Bytes in words: ``38.7 MB``, ``9.3 kB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def describe_domain(spec: BundleSpec) -> str:
    """The training domain in words: how many areas, their extent, the GSD range."""
    d = spec.training_domain
    lo, hi = d.gsd_range_m
    gsd = f"GSD {lo:g}-{hi:g} m" if math.isfinite(hi) else f"GSD from {lo:g} m"
    if not d.bboxes:
        return f"not declared (no areas); {gsd}"
    areas = "; ".join(f"{w:.2f},{s:.2f},{e:.2f},{n:.2f}" for w, s, e, n in d.bboxes[:3])
    more = f" and {len(d.bboxes) - 3} more" if len(d.bboxes) > 3 else ""
    n = len(d.bboxes)
    return f"{n} area{'s' if n != 1 else ''} (W,S,E,N: {areas}{more}); {gsd}"


def declared_accuracies(evaluation: dict[str, Any]) -> tuple[str, ...]:
    """Every declared figure of ``bundle.json``'s ``evaluation`` block, in words."""
    out = []
    for task, figures in evaluation.items():
        if not isinstance(figures, dict):
            continue
        nums = {k: v for k, v in figures.items() if isinstance(v, int | float)}
        acc = nums.pop("accuracy", None)
        extra = ", ".join(f"{k} {v:g}" for k, v in nums.items())
        label = task.replace("_", "-") if task != "zero_shot" else "zero-shot land use"
        if acc is not None:
            out.append(f"{label} {100 * acc:.1f} %" + (f" ({extra})" if extra else ""))
        elif extra:
            out.append(f"{label}: {extra}")
    return tuple(out)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def summarise(folder: str | Path, active: bool = False) -> InstalledBundle:
    """Read one bundle folder's card (bundle.json only; an unreadable one gets ``problem``)."""
    folder = Path(folder)
    size = _folder_size(folder)
    try:
        spec = BundleSpec.read(folder)
        raw = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
    except ModelContractError as e:
        return InstalledBundle(folder, folder.name, "?", active, size_bytes=size, problem=str(e))
    licence = next((str(raw[k]) for k in LICENCE_KEYS if raw.get(k)), "")
    return InstalledBundle(
        folder=folder,
        name=spec.name,
        version=spec.version,
        active=active,
        modalities=tuple(m.value for m in spec.encoders),
        domain=describe_domain(spec),
        accuracies=declared_accuracies(spec.evaluation),
        size_bytes=size,
        licence=licence,
        description=spec.description,
        provenance=dict(spec.provenance),
    )


def bundle_folders(models_dir: str | Path) -> list[Path]:
    """The visible bundle folders (with a ``bundle.json``) of a models folder, sorted."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / BUNDLE_FILE).is_file()
    )  # fmt: skip


def list_bundles(models_dir: str | Path) -> list[InstalledBundle]:
    """Every installed bundle of ``models_dir`` with its card summary; the active one flagged."""
    active = active_bundle(models_dir)
    return [summarise(p, active is not None and p == active) for p in bundle_folders(models_dir)]


def active_bundle(models_dir: str | Path) -> Path | None:
    """The active bundle folder, or None when none is chosen or it is gone."""
    path = Path(models_dir) / ACTIVE_FILE
    try:
        key = json.loads(path.read_text(encoding="utf-8")).get("folder", "")
    except (OSError, ValueError, AttributeError):
        return None
    folder = Path(models_dir) / str(key)
    if not key or "/" in key or "\\" in key or key.startswith("."):
        return None
    return folder if (folder / BUNDLE_FILE).is_file() else None


def find_bundle(models_dir: str | Path, name: str) -> Path:
    """The installed bundle called ``name``: a folder name, or a bundle name installed once.

    Raises:
        InputError: no such bundle, or a bundle name installed in several versions.
    """
    folders = bundle_folders(models_dir)
    for p in folders:
        if p.name == name:
            return p
    named = [p for p in folders if summarise(p).name == name]
    if len(named) == 1:
        return named[0]
    have = ", ".join(p.name for p in folders) or "none"
    if named:
        raise InputError(f"'{name}' is installed in several versions ({have}): name the folder")
    raise InputError(f"no installed model bundle '{name}' in {models_dir} (installed: {have})")


def set_active(models_dir: str | Path, name: str) -> Path:
    """Make the installed bundle ``name`` the active one; returns its folder.

    Raises:
        InputError: no such bundle.
    """
    folder = find_bundle(models_dir, name)
    atomic_write_text(Path(models_dir) / ACTIVE_FILE, json.dumps({"folder": folder.name}) + "\n")
    return folder


def clear_active(models_dir: str | Path) -> None:
    """Forget the active bundle (none is active afterwards)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(models_dir) / ACTIVE_FILE).unlink()


def remove_bundle(models_dir: str | Path, name: str) -> Path:
    """Delete the installed bundle ``name``; when it was active, none is active afterwards.

    The folder is first renamed to a hidden one (so it vanishes from listings at once, never
    half-deleted), then deleted.

    Returns:
        The folder it occupied.

    Raises:
        InputError: no such bundle, or it cannot be moved (in use, no permission).
    """
    folder = find_bundle(models_dir, name)
    was_active = active_bundle(models_dir) == folder
    trash = Path(tempfile.mkdtemp(prefix=".remove.", dir=models_dir))
    try:
        os.replace(folder, trash / folder.name)
    except OSError as e:
        shutil.rmtree(trash, ignore_errors=True)
        raise InputError(
            f"cannot remove {folder} ({e.strerror or e}): close what uses it (QGIS, a running "
            "job) and try again"
        ) from None
    if was_active:
        clear_active(models_dir)
    shutil.rmtree(trash, ignore_errors=True)
    return folder
