"""Evaluation: metrics, BD-rate, classical anchors, datasets, the evaluation runner, reports,
and the complexity benchmark. Never imports ``lic.training``: it evaluates checkpoints,
however they were made."""

from lic.evaluation.bd import bd_psnr, bd_rate

__all__ = ["bd_psnr", "bd_rate"]
