"""A correlated five-modality toy world for smoke runs and tests (no data download needed).

Each sample has a latent land-use class that drives its aerial colour and texture, its street
colour, its surface heights, its description and (through class-specific site centres) its
location. Training on it must lower the loss and lift retrieval above chance, which makes it a
real end-to-end check of the trainer without any download. Samples follow the shared sample
format of ``training.data`` (batched by ``training.data.collate.collate_samples``) and are fully
determined by (seed, index), so resumed runs see identical data.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.model.contract import Modality

CLASS_WORDS = (
    "cropland", "forest", "water", "housing", "industry", "wetland", "grassland", "orchard",
    "bare rock", "parkland", "marina", "quarry",
)  # fmt: skip
DENSITY = ("sparse", "scattered", "dense", "very dense")
TEMPLATES = ("an aerial view of {}", "a place with {}", "{} seen from above", "mostly {} here")


class ToyWorld(torch.utils.data.Dataset):
    """``num`` samples; ``split_seed`` separates train and held-out splits of the same world."""

    def __init__(
        self,
        num: int,
        num_classes: int = 8,
        missing_prob: float = 0.2,
        aerial_shape: tuple[int, int] = (4, 64),
        street_size: int = 64,
        dsm_size: int = 32,
        world_seed: int = 0,
        split_seed: int = 1,
    ) -> None:
        if not 2 <= num_classes <= len(CLASS_WORDS):
            raise ValueError(f"num_classes must be in 2..{len(CLASS_WORDS)}")
        self.num, self.k, self.missing = num, num_classes, missing_prob
        self.bands, self.size = aerial_shape
        self.street_size, self.dsm_size, self.split_seed = street_size, dsm_size, split_seed
        rng = np.random.default_rng(world_seed)
        self.aerial_colour = rng.uniform(0.15, 0.85, (num_classes, self.bands)).astype(np.float32)
        self.street_colour = rng.uniform(0.15, 0.85, (num_classes, 3)).astype(np.float32)
        self.height = rng.uniform(0.0, 30.0, num_classes).astype(np.float32)
        self.freq = rng.uniform(1.0, 6.0, num_classes).astype(np.float32)
        # Two sites per class, spread over a 4 x 4 degree region: clustered, like real data.
        self.sites = rng.uniform((45.0, 5.0), (49.0, 9.0), (num_classes, 2, 2))

    def __len__(self) -> int:
        return self.num

    def _latent(self, i: int) -> tuple[np.random.Generator, int, float, float, float]:
        """Class c, place (lat, lon) and density u in [0, 1] of sample i.

        u drives brightness, height, the text's adjective and the position along the site, so
        samples of one class are still told apart (instance-level retrieval is possible).
        """
        rng = np.random.default_rng([self.split_seed, i])
        c = int(rng.integers(self.k))
        u = float(rng.random())
        lat, lon = self.sites[c, rng.integers(2)] + rng.normal(0.0, 0.02, 2)
        return rng, c, float(lat + 0.2 * (u - 0.5)), float(lon), u

    def class_prompts(self) -> dict[str, tuple[str, ...]]:
        """Land-use class -> prompts, for the bundle's zero-shot classification."""
        return {w: tuple(t.format(w) for t in TEMPLATES) for w in CLASS_WORDS[: self.k]}

    def provenance(self) -> dict[str, str]:
        """Every modality of the toy world is generated."""
        return {m.value: "synthetic" for m in Modality}

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitudes and longitudes of all samples, without rendering them (for the sampler)."""
        ll = np.array([self._latent(i)[2:4] for i in range(self.num)], np.float64)
        return ll[:, 0], ll[:, 1]

    def __getitem__(self, i: int) -> dict:
        rng, c, lat, lon, u = self._latent(i)
        shade = 0.2 * (u - 0.5)
        s: dict = {
            "sample_id": f"toy-{self.split_seed}-{i}",
            "lat": lat,
            "lon": lon,
            "area_id": f"site-{c}",
            "gps": np.array([lat, lon], np.float32),
            "landuse": c,
        }
        if rng.random() >= self.missing:
            s["aerial"] = self._image(rng, self.aerial_colour[c] + shade, self.size, self.freq[c])
            if rng.random() < 0.1:  # some nodata, as at raster edges
                s["aerial"][:, : self.size // 4] = np.nan
        if rng.random() >= self.missing:
            s["streetview"] = self._image(rng, self.street_colour[c] + shade, self.street_size, 1.0)
        if rng.random() >= self.missing:
            s["dsm"] = self._dsm(rng, c, 0.5 + u)
        if rng.random() >= self.missing:
            what = f"{DENSITY[min(3, int(4 * u))]} {CLASS_WORDS[c]}"
            s["text"] = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(what)
        return s

    @staticmethod
    def _image(rng: np.random.Generator, colour: np.ndarray, size: int, freq: float) -> np.ndarray:
        yy = np.linspace(0, 2 * np.pi, size, dtype=np.float32)
        texture = 0.08 * np.sin(freq * yy)[None, :, None] * np.cos(freq * yy)[None, None, :]
        noise = rng.normal(0.0, 0.05, (len(colour), size, size)).astype(np.float32)
        return np.clip(colour[:, None, None] + texture + noise, 0.0, 1.0).astype(np.float32)

    def _dsm(self, rng: np.random.Generator, c: int, gain: float) -> np.ndarray:
        n = self.dsm_size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
        bumps = np.sin(self.freq[c] * np.pi * xx) * np.sin(self.freq[c] * np.pi * yy)
        base = rng.uniform(0.0, 500.0)  # terrain elevation: removed by median centring
        dsm = base + gain * self.height[c] * np.abs(bumps) + rng.normal(0.0, 0.5, (n, n))
        return dsm[None].astype(np.float32)
