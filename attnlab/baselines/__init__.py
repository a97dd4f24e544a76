"""Baselines: non-learned (popularity) and classical models.

The names below are imported on first use (``from attnlab.baselines import EASE``): the
modules pull in scipy and scikit-learn, which a run that fits no such baseline never needs.
"""

import importlib

_WHERE = {
    "BGNBDChurn": "bgnbd", "BGNBDParams": "bgnbd", "fit_bgnbd": "bgnbd",
    "ALS": "cf", "BPR": "cf", "EASE": "cf", "EASESolver": "cf", "ItemKNN": "cf",
    "HGBChurn": "gbm",
    "TIFUKNN": "nbr", "UPCF": "nbr", "PTopFreq": "nbr",
    "MostPopular": "popularity", "PersonalRepeat": "popularity",
    "RFMChurn": "rfm", "RFMSegmentPopularity": "rfm", "SegmentLevel": "rfm", "rfm_features": "rfm",
}

__all__ = ["MostPopular", "PersonalRepeat",
           "RFMChurn", "RFMSegmentPopularity", "SegmentLevel", "rfm_features",
           "BGNBDChurn", "BGNBDParams", "fit_bgnbd",
           "ItemKNN", "EASE", "EASESolver", "ALS", "BPR",
           "PTopFreq", "UPCF", "TIFUKNN", "HGBChurn"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
