"""python -m pipelines.stages.finetune_joint_ablation [--params params.yaml]

Stage `finetune_joint_ablation`: `finetune_joint` with the mask expansion loss switched off and every
other param the same, into `paths.joint_ablation`; the evaluation's "joint without MEL" row. Writes
`reports/finetune_joint_ablation.json` (with `pretrained_val_*`) and its curves, tracked in MLflow.
"""

from __future__ import annotations

import sys

from pipelines.common import stage_main
from pipelines.params import Params
from pipelines.stages import finetune_joint


def run(params: Params, experiment: str = "object-removal") -> dict:
    return finetune_joint.run(params, experiment, ablation=True)


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
