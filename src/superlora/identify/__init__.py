"""Super-weight identification (arXiv 2411.07191): detect by activation spikes, prove by ablation."""

from superlora.identify.ablation import Coord, scaled_weights
from superlora.identify.config import IdentifyConfig
from superlora.identify.detect import SuperWeight
from superlora.identify.pipeline import Identification, find_super_weights, identify, write_outputs

__all__ = [
    "Coord",
    "IdentifyConfig",
    "Identification",
    "SuperWeight",
    "find_super_weights",
    "identify",
    "scaled_weights",
    "write_outputs",
]
