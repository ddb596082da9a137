"""Assemble the shipped default bundle from an exported one: pick int8 towers, set the domain.

    python scripts/ship_bundle.py --bundle out/default_train/bundle --dataset data-cache/dataset_v2 \
        --out resources/models/default --int8 text --holdout havel_s2 sfbay_l7 \
        --targets out/default_train/targets/targets.json

- Uses ``<modality>.int8.onnx`` for the modalities named by ``--int8`` (export keeps an int8
  variant only when its cosine to fp32 is >= 0.99), fp32 for the rest: the file the exported
  ``bundle.json`` names, i.e. ``<modality>.opt.onnx`` (fused attention) where
  ``python -m training.export --optimize`` kept one, unless the modality is named by ``--plain``.
- The training domain is :func:`training.domain.dataset_domain` (the one ``training.export``
  writes too): one padded WGS84 box per area of the TRAINING samples that carry aerial or DSM
  imagery finer than 1 km (the coarse worldwide Blue Marble chips only teach the GPS tower the
  globe, so they are not "domain"), and the GSD range of those chips.
- Writes into a temporary sibling folder, checks the size cap and that the engine loads and runs
  every tower, then replaces the target folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.model.bundle_spec import BundleSpec, TrainingDomain  # noqa: E402
from engine.model.contract import Modality  # noqa: E402
from training.domain import COARSE_GSD_M, PAD_DEG, class_prompts, dataset_domain  # noqa: E402, F401

CLASS_COLORS = {
    "water": "#3a7bd5",
    "forest": "#1b7837",
    "cropland": "#e6c229",
    "grassland": "#a6d96a",
    "residential": "#d7301f",
    "industrial": "#7b3294",
    "bare": "#bf812d",
    "wetland": "#41b6c4",
    "shrubland": "#8c6d31",
}


def training_domain(dataset: Path, holdout: tuple[str, ...] = ()) -> TrainingDomain:
    """The shipped domain: :func:`training.domain.dataset_domain` of the ``train`` split,
    without the areas held out of training."""
    return dataset_domain(dataset, "train", holdout)


def evaluation(targets: Path, scene: str) -> dict:
    """bundle.json's ``evaluation`` block from a training.targets_run report (the new bundle's
    column is the first ``--bundle`` of that run)."""
    import json

    res = json.loads(targets.read_text())
    first = next(iter(res["bundles"].values()))
    zs = first["scenes"][scene]["zero_shot"]
    return {
        "zero_shot": {"accuracy": round(zs["accuracy"], 4), "n_test": zs["n"],
                      "classes": len(zs["classes"]), "chance": round(zs["chance"], 4),
                      "majority": round(zs["majority"], 4),
                      "coarse_accuracy": round(zs.get("coarse", {}).get("accuracy", 0.0), 4)},
        "source": f"training.targets_run on {scene} (never trained on), {res['dataset']}: "
                  "aerial embeddings vs the bundle's class prompts through the text tower; "
                  "see docs/MODEL_CARD.md",
    }  # fmt: skip


def assemble(
    src: Path, dataset: Path, out: Path, int8: list[str], description: str, plain: list[str] = (),
    holdout: tuple[str, ...] = (), evaluation_block: dict | None = None,
) -> Path:  # fmt: skip
    spec = BundleSpec.read(src)
    stage = out.with_name(out.name + ".staging")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    encoders = {}
    for m, named in spec.encoders.items():
        fname = f"{m.value}.onnx" if m.value in plain else named
        variant = f"{m.value}.int8.onnx"
        use = variant if m.value in int8 and (src / variant).is_file() else fname
        if m.value in int8 and use == fname:
            print(f"ship: no int8 variant for {m.value} (export refused it); keeping fp32")
        shutil.copy2(src / use, stage / use)
        encoders[m] = use
    shutil.copy2(src / spec.tokenizer, stage / spec.tokenizer)
    prompts = class_prompts(list(spec.class_prompts))
    colors = {c: CLASS_COLORS[c] for c in prompts if c in CLASS_COLORS}
    shipped = BundleSpec(
        name=spec.name, version=spec.version, dim=spec.dim, encoders=encoders,
        tokenizer=spec.tokenizer, class_prompts=prompts, class_colors=colors,
        prompt_templates=("{}", "an aerial view of {}", "a satellite image of {}"),
        provenance=spec.provenance, training_domain=training_domain(dataset, holdout),
        description=description, logit_scale=spec.logit_scale,
        evaluation=evaluation_block or spec.evaluation,
    )  # fmt: skip
    shipped.write(stage)
    return stage


def store_fp16(stage: Path, tower: str) -> None:
    """Store ``tower``'s weights as fp16 in the staged bundle (checked: min cosine 0.9999 and
    batch-independent, see training.weight_storage) and drop the fp32 file it replaces."""
    from training.weight_storage import rewrite_bundle_tower

    src = stage / BundleSpec.read(stage).encoders[Modality(tower)]
    dst = rewrite_bundle_tower(stage, tower)
    src.unlink()
    print(f"ship: {tower} weights stored as fp16: {dst.name} ({dst.stat().st_size / 1e6:.1f} MB)")


def check(stage: Path, max_mb: float) -> float:
    from engine.model import UniGeoModel

    size_mb = sum(p.stat().st_size for p in stage.iterdir()) / 1e6
    if size_mb > max_mb:
        raise SystemExit(f"ship: bundle is {size_mb:.1f} MB > {max_mb} MB")
    with UniGeoModel.load(stage) as model:
        for m in model.modalities:
            s = model.spec(m).preprocess
            if m is Modality.TEXT:
                e = model.encode_text(["open water"])
            elif m is Modality.GPS:
                e = model.encode_gps([47.0], [-99.1])
            elif m is Modality.STREETVIEW:
                e = model.encode_photos([np.full((64, 64, 3), 128, np.uint8)])
            else:
                c = len(s.bands) if m is Modality.AERIAL else 1
                e = model.encode_tiles(
                    m, np.random.default_rng(0).random((2, c, s.size, s.size), np.float32)
                )
            assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-3), m
    return size_mb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--bundle", required=True, type=Path, help="bundle from python -m training.export"
    )
    ap.add_argument("--dataset", required=True, type=Path, help="the dataset it was trained on")
    ap.add_argument("--out", default=ROOT / "resources" / "models" / "default", type=Path)
    ap.add_argument("--int8", nargs="*", default=["text"], help="modalities shipped as int8")
    ap.add_argument("--holdout", nargs="*", default=[], help="areas never trained on")
    ap.add_argument("--targets", type=Path, help="targets.json of training.targets_run")
    ap.add_argument("--zero-shot-scene", default="havel_s2", help="labelled held-out area")
    ap.add_argument(
        "--plain",
        nargs="*",
        default=[],
        help="modalities shipped as the plain fp32 export even if an .opt.onnx exists",
    )
    ap.add_argument("--max-mb", type=float, default=60.0)
    ap.add_argument(
        "--w16",
        nargs="*",
        default=[],
        help="towers whose weights are stored as fp16 (training.weight_storage)",
    )
    ap.add_argument("--description", default="")
    a = ap.parse_args()
    ev = evaluation(a.targets, a.zero_shot_scene) if a.targets else None
    stage = assemble(a.bundle, a.dataset, a.out, a.int8, a.description, a.plain,
                     tuple(a.holdout), ev)  # fmt: skip
    for tower in a.w16:
        store_fp16(stage, tower)
    size = check(stage, a.max_mb)
    old = a.out.with_name(a.out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if a.out.exists():
        a.out.rename(old)
    stage.rename(a.out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"ship: {a.out} ({size:.1f} MB): " + ", ".join(sorted(p.name for p in a.out.iterdir())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
