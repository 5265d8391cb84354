"""Training: Lightning modules (training logic only), data, callbacks, export.

Codecs stay plain ``nn.Module``s; everything here wraps them.
"""

from lic.training.losses import RateDistortionLoss
from lic.training.module import RateDistortionModule

__all__ = ["RateDistortionLoss", "RateDistortionModule"]
