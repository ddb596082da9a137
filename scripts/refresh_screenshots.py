"""Refresh the README's QGIS screenshots (docs/img/qgis_*.png) from the real-QGIS test's screens.

``tests/qgis_app`` drives every tool in the real QGIS and saves the window, the map canvas, the
search dock and the dialogs in ``out/qgis-app/screens`` (with ``<name>.json``: where the canvas,
dock and message bar lie in the window). This script crops and scales those pictures and writes
them as palette PNGs (each well under 400 kB), so that a later run repeats the README's pictures:

    .venv/bin/python -m pytest tests/qgis_app -q -k every_algorithm
    .venv/bin/python scripts/refresh_screenshots.py [--screens out/qgis-app/screens] [--out docs/img]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 400_000
Box = tuple[int, int, int, int]  # left, top, right, bottom


def _box(screens: Path, name: str, *parts: str, margin: int = 0) -> Box:
    """The union of the named widgets' rectangles of ``<name>.json``, in window pixels."""
    boxes = json.loads((screens / f"{name}.json").read_text())
    rects = [boxes[p] for p in parts]
    left = min(x for x, _, _, _ in rects) - margin
    top = min(y for _, y, _, _ in rects) - margin
    right = max(x + w for x, _, w, _ in rects) + margin
    bottom = max(y + h for _, y, _, h in rects) + margin
    return max(left, 0), max(top, 0), right, bottom


def trim_white(img: Image.Image, pad: int = 6) -> Image.Image:
    """Cut the empty canvas around the map (white, as QGIS's default background)."""
    rgb = img.convert("RGB")
    bbox = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if bbox is None:
        return img
    left, top, right, bottom = bbox
    return img.crop(
        (
            max(left - pad, 0),
            max(top - pad, 0),
            min(right + pad, img.width),
            min(bottom + pad, img.height),
        )
    )


def fit(img: Image.Image, width: int) -> Image.Image:
    """Scale down (never up) to ``width`` pixels wide."""
    if img.width <= width:
        return img
    return img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)


def save(img: Image.Image, path: Path, plain_up_to: int = 250_000) -> int:
    """Save as an optimised PNG: true colour when small enough, else 256 colours; the size.

    Octree quantisation keeps small saturated details (the red cross of a place to avoid, the
    legend swatches) that a median cut merges into their surroundings.
    """
    img = img.convert("RGB")
    img.save(path, optimize=True)
    if path.stat().st_size > plain_up_to:
        img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path.stat().st_size


def _window(name: str, width: int = 1280) -> Callable[[Path], Image.Image]:
    return lambda s: fit(Image.open(s / f"{name}.png"), width)


def _canvas(name: str, width: int = 720) -> Callable[[Path], Image.Image]:
    return lambda s: fit(trim_white(Image.open(s / f"{name}.canvas.png")), width)


def _plain(name: str, width: int = 1000) -> Callable[[Path], Image.Image]:
    return lambda s: fit(Image.open(s / f"{name}.png"), width)


def _canvas_and_dock(name: str, width: int = 1100) -> Callable[[Path], Image.Image]:
    def make(s: Path) -> Image.Image:
        img = Image.open(s / f"{name}.png")
        return fit(img.crop(_box(s, name, "canvas", "dock")), width)

    return make


def _message_bar(name: str, width: int = 1100) -> Callable[[Path], Image.Image]:
    def make(s: Path) -> Image.Image:
        img = Image.open(s / f"{name}.png")
        x, y, r, b = _box(s, name, "messagebar", "dock")
        return fit(img.crop((x, y, r, y + 400)), width)  # the message and the dock's top

    return make


# README picture -> how it is made from the screens (the check that took it in brackets)
PICTURES: dict[str, Callable[[Path], Image.Image]] = {
    # the window: toolbar, layers, a text heatmap "open water" and the dock (gui_text_search)
    "qgis_window.png": _window("text_search"),
    # the dock after Find similar: two places to find, one to avoid (gui_point_clicks)
    "dock.png": lambda s: Image.open(s / "point_clicks.dock.png"),
    # Find similar: green plus = example place, red cross = place to avoid (gui_point_clicks)
    "qgis_find_similar.png": _canvas("point_clicks"),
    # Similar to region: the drawn field and its heatmap (gui_region_tool)
    "qgis_region.png": _canvas("region_tool"),
    # Photo -> map: the dock with the photo's EXIF position and its heatmap (gui_photo_search)
    "qgis_photo.png": _canvas_and_dock("photo_search"),
    # the classify dialog as it opens with the default model: few-shot, and why (gui_classify_*)
    "qgis_classify_dialog.png": _plain("classify_dialog_opened"),
    # the Model manager after installing the default bundle from its zip (gui_model_manager)
    "qgis_model_manager.png": _plain("model_manager_dialog", 960),
    # unigeo:heatmap in its Processing dialog (gui_processing_dialog)
    "qgis_processing_dialog.png": _plain("processing_dialog", 1000),
    # first start without a model: the message bar and the dock say how to install one
    "qgis_first_run.png": _message_bar("first_run"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screens", type=Path, default=ROOT / "out" / "qgis-app" / "screens")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args(argv)
    missing = [
        n for n in ("text_search.png", "point_clicks.json") if not (args.screens / n).is_file()
    ]
    if missing:
        print(
            f"refresh_screenshots: {args.screens} lacks {missing}: run "
            "'.venv/bin/python -m pytest tests/qgis_app -q -k every_algorithm' first",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    too_big = []
    for name, make in PICTURES.items():
        img = make(args.screens)
        size = save(img, args.out / name)
        print(f"{args.out / name}: {img.width} x {img.height}, {size / 1000:.0f} kB")
        if size > MAX_BYTES:
            too_big.append(name)
    if too_big:
        print(f"refresh_screenshots: over {MAX_BYTES} bytes: {too_big}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
