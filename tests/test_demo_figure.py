"""scripts/demo.py --figure: the README's demo picture from the four renders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.demo import figure_strip  # noqa: E402


def test_figure_strip_puts_renders_side_by_side_at_one_height(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
    sizes = [(90, 120), (45, 60), (90, 120), (180, 240)]  # all 3:4, different scales
    pngs = []
    for i, (c, s) in enumerate(zip(colours, sizes, strict=True)):
        pngs.append(tmp_path / f"{i}.png")
        Image.new("RGB", s, c).save(pngs[-1])
    dest = tmp_path / "img" / "demo.png"
    dest.parent.mkdir()
    figure_strip(pngs, dest, height=40, gap=4)
    a = np.asarray(Image.open(dest).convert("RGB"))
    assert a.shape == (40, 4 * 30 + 3 * 4, 3)  # each 30 px wide at 40 px high
    for k, c in enumerate(colours):
        assert tuple(a[20, k * 34 + 15]) == c
    assert tuple(a[20, 31]) == (255, 255, 255)  # the gap
    assert [p.name for p in dest.parent.iterdir()] == ["demo.png"]  # no temporary left
