"""Plots a researcher would rather look at than read (matplotlib, Agg-safe)."""

from __future__ import annotations

from typing import Any


def learning_curves(history: list[dict[str, Any]], *, monitor: str, title: str = ""):
    """Training loss and the validation monitor per epoch (two panels); returns the Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3), constrained_layout=True)
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="training loss")
    b.plot(epochs, [h.get(f"valid/{monitor}", float("nan")) for h in history], marker="o", color="C1")
    b.set(xlabel="epoch", ylabel=f"valid {monitor}", title=f"validation {monitor}")
    if title:
        fig.suptitle(title)
    return fig
