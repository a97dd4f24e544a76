"""Plots a researcher would rather look at than read (matplotlib Figures, no pyplot state)."""

from __future__ import annotations

from typing import Any


def learning_curves(history: list[dict[str, Any]], *, monitor: str, title: str = ""):
    """Training loss and the validation monitor per epoch (two panels); returns the Figure."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3), layout="constrained")  # no pyplot: never touches a notebook's backend
    a, b = fig.subplots(1, 2)
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="training loss")
    b.plot(epochs, [h.get(f"valid/{monitor}", float("nan")) for h in history], marker="o", color="C1")
    b.set(xlabel="epoch", ylabel=f"valid {monitor}", title=f"validation {monitor}")
    if title:
        fig.suptitle(title)
    return fig
