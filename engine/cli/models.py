"""``python -m engine models install|list|use|remove|pack``: the model manager from a shell.

The models folder defaults to ``$UNIGEO_MODELS_DIR``, else ``<default QGIS profile>/unigeo/models``
(what the plugin in that profile uses); ``--models-dir`` picks another, e.g. the folder of a
throw-away QGIS profile: ``python -m engine models install bundle.zip --sha256 HEX
--models-dir PROFILE/unigeo/models``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import CancelledError, InputError
from ..library.catalog import DEFAULT_BUNDLE, default_models_dir

MODELS_EPILOG = """examples:
  python -m engine models install --default                  # the pinned default model
  python -m engine models install dist/model/unigeo-default-0.3.0.zip   # uses the .sha256 beside it
  python -m engine models install https://host/b.zip --sha256 HEX --models-dir PROFILE/unigeo/models
  python -m engine models list [--json]
  python -m engine models use unigeo-default-0.3.0
  python -m engine models remove unigeo-default-0.3.0
  python -m engine models pack out/bundle --out dist/model   # zip + .sha256 to share a bundle
"""


def add_models_parser(sub: Any) -> None:
    """Add ``models`` and its sub-commands to the top-level parser."""
    p = sub.add_parser(
        "models",
        help="install, list, choose or remove model bundles",
        epilog=MODELS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="models_cmd", required=True)
    inst = _sub(msub, "install", "install a bundle from a zip, a folder or an https URL")
    inst.add_argument("source", nargs="?", help="bundle zip, bundle folder or https URL")
    inst.add_argument("--default", action="store_true", help="the pinned default bundle")
    inst.add_argument("--sha256", help="expected sha256 of the zip (required for a URL)")
    inst.add_argument("--no-activate", action="store_true", help="do not make it active")
    inst.add_argument("--replace", action="store_true", help="replace a different install")
    inst.add_argument("--allow-http", action="store_true", help="allow http to a remote host")
    inst.set_defaults(func=cmd_install)
    ls = _sub(msub, "list", "list installed bundles with their model card summary")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)
    use = _sub(msub, "use", "make an installed bundle the active one")
    use.add_argument("name", help="folder name (or bundle name when installed once)")
    use.set_defaults(func=cmd_use)
    rm = _sub(msub, "remove", "delete an installed bundle")
    rm.add_argument("name", help="folder name (or bundle name when installed once)")
    rm.set_defaults(func=cmd_remove)
    pk = msub.add_parser("pack", help="zip a bundle folder reproducibly, with its .sha256")
    pk.add_argument("folder", help="bundle folder (validated first)")
    pk.add_argument("--out", required=True, help="output folder for <name>-<version>.zip")
    pk.set_defaults(func=cmd_pack)


def _sub(msub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p = msub.add_parser(name, help=help_text)
    p.add_argument(
        "--models-dir",
        default=None,
        help=f"models folder (default: $UNIGEO_MODELS_DIR, else {default_models_dir()})",
    )
    return p


def _root(args: argparse.Namespace) -> Path:
    return Path(args.models_dir) if args.models_dir else default_models_dir()


def cmd_install(args: argparse.Namespace) -> int:
    """Install, printing stages and a progress bar on stderr; exit 0 when installed."""
    from ..library.install import install_bundle, install_default
    from .common import progress_bar

    if bool(args.default) == bool(args.source):
        raise InputError("give either a SOURCE (zip, folder or https URL) or --default")
    bar, update = progress_bar("install")
    opts = dict(
        activate=False if args.no_activate else None,
        replace=args.replace,
        allow_http=args.allow_http,
        progress=update,
        message=lambda text: bar.write(text, file=sys.stderr),
    )
    try:
        if args.default:
            res = install_default(_root(args), **opts)
        else:
            res = install_bundle(args.source, _root(args), args.sha256, **opts)
    except KeyboardInterrupt:
        raise CancelledError("model install interrupted; nothing was installed") from None
    finally:
        bar.close()
    b = res.bundle
    state = "already installed" if res.already_installed else "installed"
    print(f"{state}: {b.name} {b.version} in {b.folder}{' (active)' if b.active else ''}")
    if res.sha256:
        print(f"sha256 verified: {res.sha256}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print every installed bundle's card summary (or JSON)."""
    from ..library.installed import list_bundles

    root = _root(args)
    bundles = list_bundles(root)
    if args.json:
        print(json.dumps({"models_dir": str(root), "bundles": [b.to_dict() for b in bundles]},
                         indent=2))  # fmt: skip
        return 0
    if not bundles:
        print(
            f"no model bundle installed in {root}; install the default one "
            f"({DEFAULT_BUNDLE.size_label()}) with: python -m engine models install --default"
            + ("" if args.models_dir is None else f" --models-dir {root}")
        )
        return 0
    for b in bundles:
        print("\n".join(b.card_lines()))
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    from ..library.installed import set_active

    folder = set_active(_root(args), args.name)
    print(f"active: {folder.name} ({folder})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from ..library.installed import remove_bundle

    folder = remove_bundle(_root(args), args.name)
    print(f"removed: {folder}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    """Validate a bundle folder, then write ``<name>-<version>.zip`` and its ``.sha256``."""
    from ..library.install import validate_bundle
    from ..library.unpack import pack_bundle

    validate_bundle(args.folder, consequence="nothing was packed")
    out, digest = pack_bundle(args.folder, args.out)
    print(f"{out}  {out.stat().st_size} bytes\nsha256 {digest}")
    return 0
