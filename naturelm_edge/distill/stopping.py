"""When training stops helping: one rule for the student decoder and the student encoder, each judged per epoch on
recordings it never trains on (held-out species or held-back recordings), so a bundle costs the epochs that
help and the build records why it stopped."""

from __future__ import annotations

from typing import Protocol


class Patience(Protocol):
    patience: int  # epochs without improvement before stopping (0: run every epoch)
    min_improvement: float  # relative to the best loss so far


def plateau_reason(epoch_losses: list[float], config: Patience, what: str = "loss", start: int = 0) -> str | None:
    """Why training should stop now: ``what`` (one value per epoch) has not improved by ``min_improvement`` on
    its best before the last ``patience`` epochs (None: go on). Epochs before ``start`` do not count: while a
    schedule still raises the learning rate, the loss jumps about without training having stopped helping."""
    counted = epoch_losses[start:]
    if config.patience <= 0 or len(counted) <= config.patience:
        return None
    best_before = min(counted[:-config.patience])
    if min(counted[-config.patience:]) > best_before * (1 - config.min_improvement):
        return (f"{what} stopped improving: after {len(epoch_losses)} epochs the last {config.patience} did not "
                f"improve its best {best_before:.4f} by {config.min_improvement:.0%}")
    return None
