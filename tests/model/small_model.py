"""The behaviour tests' small model, trained from scratch by the pipeline's own stages on a reduced profile.

`python -m tests.model.small_model FOLDER` trains it under FOLDER and prints the joint checkpoint's path.
The test session starts it in a background process at the lowest CPU priority as soon as the behaviour
tests are collected (tests/conftest.py), so it trains on the cores the other tests leave idle while they
wait on servers and subprocesses; the `model` fixture then waits for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKPOINT = Path("models/joint/best.ckpt")  # under the folder, from the tiny params' `paths.joint`


def train(folder: Path) -> Path:
    """Scenes of stuff and at most one person, 48 px, narrower inpainters, 1,200 pairs, fewer epochs (about
    5 minutes on two idle cores): scenes -> pairs -> segmenter -> inpainters -> joint. Returns best.ckpt."""
    from pipelines.stages import finetune_joint, pretrain_inpainter, pretrain_segmenter, scenes, synthesize
    from tests.conftest import run_stages, tiny_params_raw

    raw = tiny_params_raw(folder)
    # a narrow version of the built-in data: stuff with at most one person, the domain of the tests' inputs
    raw["scenes"].update(num_images=1500, size=96, min_things=0, max_things=1, person_prob=1.0, occlusion_prob=0.0,
                         crowd_prob=0.0)
    raw["synthesize"].update(image_size=96, pairs={"train": 1200, "val": 40, "test": 8}, min_object_area=100,
                             label_alpha=0.5)
    # no offset head, no Dice term, the labels' old threshold and the map path on: this model stays the one
    # the behaviour tests' floors were set on (scenes with at most one person need no instance split)
    raw["networks"] = {"image_size": 48, "segmenter": {"width": 16, "depth": 3, "offsets": False, "image_size": 48},
                       "inpainter": {"width": 8, "residual_blocks": 2, "dilation": 2, "discriminator_width": 8,
                                     "hole_fill": "smooth", "image_head": "residual01"}}
    raw["trainer"].update(num_workers=0)
    raw["pretrain_segmenter"].update(epochs=12, background_share=0.5, precision="32-true", dice_weight=0.0)
    raw["pretrain_inpainter"].update(epochs=2, precision="32-true")  # fp32 everywhere: the floors' model
    raw["finetune_joint"].update(epochs=1, map_gradient=True, precision="32-true", dice_weight=0.0)
    run_stages(raw, (scenes, synthesize, pretrain_segmenter, pretrain_inpainter, finetune_joint), folder)
    return folder / CHECKPOINT


if __name__ == "__main__":
    print(train(Path(sys.argv[1]).resolve()))
