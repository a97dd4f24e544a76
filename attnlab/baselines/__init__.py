"""Baselines: non-learned (popularity) and classical models."""

from attnlab.baselines.popularity import MostPopular, PersonalRepeat

__all__ = ["MostPopular", "PersonalRepeat"]
