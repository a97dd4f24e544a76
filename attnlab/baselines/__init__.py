"""Baselines: non-learned (popularity) and classical models."""

from attnlab.baselines.bgnbd import BGNBDChurn, BGNBDParams, fit_bgnbd
from attnlab.baselines.cf import ALS, BPR, EASE, EASESolver, ItemKNN
from attnlab.baselines.gbm import HGBChurn
from attnlab.baselines.nbr import TIFUKNN, UPCF, PTopFreq
from attnlab.baselines.popularity import MostPopular, PersonalRepeat
from attnlab.baselines.rfm import RFMChurn, RFMSegmentPopularity, SegmentLevel, rfm_features

__all__ = ["MostPopular", "PersonalRepeat",
           "RFMChurn", "RFMSegmentPopularity", "SegmentLevel", "rfm_features",
           "BGNBDChurn", "BGNBDParams", "fit_bgnbd",
           "ItemKNN", "EASE", "EASESolver", "ALS", "BPR",
           "PTopFreq", "UPCF", "TIFUKNN", "HGBChurn"]
