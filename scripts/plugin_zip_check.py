"""Check a plugin zip against the official QGIS plugin repository's upload rules (stdlib only).

The rules are those its upload validator applies: at most 25,000,000 bytes; a readable zip with
no CRC errors; no path with ``..`` or a leading ``/``; no ``.pyc`` file and no ``__pycache__``,
``.git`` or ``__MACOSX`` folder; one top folder whose name starts with a letter and holds only
letters, digits, ``-`` and ``_``; ``__init__.py``, ``metadata.txt`` and ``LICENSE`` in it; a
``[general]`` section with every required field; http(s) URLs for tracker, repository and
homepage; no slash in the author. UniGeo adds its own: no tests, training code, benchmarks,
docs or scripts, and (unless ``--with-model``) no model files.

Usage: ``python scripts/plugin_zip_check.py dist/unigeo-0.1.0.zip [--with-model]``.
"""

from __future__ import annotations

import configparser
import re
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

MAX_BYTES = 25_000_000
REQUIRED = (
    "name",
    "description",
    "version",
    "qgisMinimumVersion",
    "author",
    "email",
    "about",
    "tracker",
    "repository",
)
FORBIDDEN_DIRS = ("__MACOSX", ".git", "__pycache__")
NOT_SHIPPED = ("tests", "training", "bench", "docs", "scripts", ".ci")
MODEL_DIR = "resources/models"


def check_names(names: list[str], with_model: bool) -> list[str]:
    """Problems with the member names (paths, forbidden folders, layout)."""
    out = []
    for n in names:
        parts = n.split("/")
        if ".." in n or n.startswith("/"):
            out.append(f"path information in '{n}'")
        if ".pyc" in n:
            out.append(f"compiled Python file '{n}'")
        out += [f"'{d}' folder at '{n}'" for d in FORBIDDEN_DIRS if d in parts]
        if len(parts) > 1 and parts[1] in NOT_SHIPPED:
            out.append(f"non-runtime file '{n}'")
        if not with_model and (n.endswith(".onnx") or "/".join(parts[1:]).startswith(MODEL_DIR)):
            out.append(f"model file '{n}' (the model is its own zip)")
    tops = {n.split("/")[0] for n in names}
    if len(tops) != 1:
        out.append(f"{len(tops)} top-level entries ({', '.join(sorted(tops))}); need one folder")
    elif not re.match(r"^[A-Za-z][A-Za-z0-9_-]+$", next(iter(tops))):
        out.append(f"top folder '{next(iter(tops))}' is not a valid package name")
    if names and "/" not in names[0]:
        out.append(f"the first entry '{names[0]}' is not inside a folder")
    top = names[0].split("/")[0] if names else ""
    for need in ("__init__.py", "metadata.txt", "LICENSE"):
        if f"{top}/{need}" not in names:
            out.append(f"{top}/{need} is missing")
    return out


def check_metadata(text: str, names: list[str], top: str) -> list[str]:
    """Problems with ``metadata.txt``: required fields, URLs, author, icon."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # keys are case-sensitive in the repository's parser
    try:
        cp.read_string(text)
    except configparser.Error as e:
        return [f"metadata.txt does not parse: {e}"]
    if not cp.has_section("general"):
        return ["metadata.txt has no [general] section"]
    md = dict(cp["general"])
    out = [f"metadata.txt lacks '{k}'" for k in REQUIRED if not md.get(k, "").strip()]
    for key in ("tracker", "repository", "homepage"):
        if key in md:
            u = urlsplit(md[key].strip())
            if u.scheme not in ("http", "https") or not u.netloc:
                out.append(f"metadata.txt '{key}' is not a URL: {md[key]!r}")
    if "/" in md.get("author", ""):
        out.append("metadata.txt 'author' contains a slash")
    if not re.match(r"^\d+\.\d+(\.\d+)?$", md.get("qgisMinimumVersion", "").strip()):
        out.append("metadata.txt 'qgisMinimumVersion' is not a version like 3.22")
    icon = md.get("icon", "").strip().removeprefix("./")
    if icon and f"{top}/{icon}" not in names:
        out.append(f"the icon '{icon}' is not in the zip")
    return out


def check_zip(path: str | Path, with_model: bool = False) -> list[str]:
    """Every problem that would make the repository (or UniGeo's packaging) refuse ``path``."""
    path = Path(path)
    size = path.stat().st_size
    out = [] if with_model or size <= MAX_BYTES else [f"{size} bytes > {MAX_BYTES}"]
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        return [*out, f"not a zip: {e}"]
    with zf:
        names = zf.namelist()
        bad = zf.testzip()
        if bad:
            out.append(f"CRC error in {bad}")
        out += check_names(names, with_model)
        top = names[0].split("/")[0] if names else ""
        if f"{top}/metadata.txt" in names:
            text = zf.read(f"{top}/metadata.txt").decode("utf-8")
            out += check_metadata(text, names, top)
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    problems = check_zip(args[0], with_model="--with-model" in argv)
    for p in problems:
        print(f"plugin zip: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
