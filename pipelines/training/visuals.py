"""Sample grids for MLflow: rows of (B, 3, H, W) tensors in [0, 1] -> one uint8 RGB image."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch


def colorize(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class indices -> (B, 3, H, W) colours from a fixed palette (class 0 black)."""
    rng = np.random.default_rng(12345)
    palette = torch.from_numpy(rng.uniform(0.15, 1.0, (max(num_classes, 1), 3)).astype(np.float32))
    palette[0] = 0.0
    return palette.to(labels.device)[labels.clamp(0, num_classes - 1)].permute(0, 3, 1, 2)


def grid_image(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Each row a (B, 3, H, W) batch; images side by side, rows stacked -> (H', W', 3) uint8."""
    lines = []
    for row in rows:
        row = row.detach().float().cpu().clamp(0, 1)
        if row.shape[1] == 1:
            row = row.expand(-1, 3, -1, -1)
        tiles = torch.nn.functional.pad(row, (pad, pad, pad, pad), value=1.0)
        lines.append(torch.cat(list(tiles), dim=2))  # (3, H + 2p, B * (W + 2p))
    grid = torch.cat(lines, dim=1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def log_grid(module: L.LightningModule, image: np.ndarray, name: str) -> None:
    """Log a grid as an MLflow artifact when the module's logger is MLflow's (rank 0 only)."""
    logger = module.logger
    if logger is None or not hasattr(logger, "run_id") or module.global_rank != 0:
        return
    logger.experiment.log_image(logger.run_id, image, name)
