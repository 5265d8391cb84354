"""The rate–distortion LightningModule: training logic around any registered codec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lic.errors import LicError
from lic.training.losses import RateDistortionLoss, RateDistortionTerms
from lic.training.precision import autocast_dtype

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class NonFiniteLossError(LicError):
    """Too many consecutive training steps produced a non-finite loss."""


def split_parameters(codec: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Main parameters, and the entropy bottlenecks' quantiles (trained by the aux loss)."""
    main, aux = [], []
    for name, parameter in codec.named_parameters():
        if parameter.requires_grad:
            (aux if name.endswith(".quantiles") else main).append(parameter)
    return main, aux


class RateDistortionModule(pl.LightningModule):
    """Trains a codec on ``loss(codec(x), x)`` with CompressAI's two-optimizer recipe.

    One backward pass per step on ``rd_loss + aux_loss``; then the main optimizer steps the
    network (gradients clipped to ``clip_max_norm``) and the auxiliary optimizer steps the
    entropy bottleneck's quantiles. The aux loss only reaches the quantiles, so the main
    parameters see the rate–distortion gradient alone. Optimisation is manual because Lightning
    drives one optimizer per step; the aux optimizer is stepped directly so that
    ``global_step`` counts training steps, not optimizer calls.

    A step whose loss is not finite on any rank is skipped on all ranks (and logged as
    ``train/nonfinite``); ``max_nonfinite_steps`` in a row stop the run.

    A variable-rate codec (``codec.variable_rate``) draws one quality per batch, uniformly over
    its range, and is trained at that quality's λ (``codec.lmbda_at``; the loss's own λ is then
    only the run's label); the draw is logged (``train/quality``). Validation runs at the
    codec's middle quality.

    Args:
        codec: a codec built by :func:`lic.create_codec`.
        loss: the rate–distortion loss (λ and metric).
        optimizer: ``params -> Optimizer`` for the main parameters.
        aux_optimizer: ``params -> Optimizer`` for the quantiles.
        scheduler: ``optimizer -> LRScheduler`` for the main optimizer, stepped every step.
        clip_max_norm: gradient-norm clip of the main parameters (0 disables).
        max_nonfinite_steps: consecutive non-finite steps tolerated before stopping.
        transform_precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where the device has it): the
            precision of the analysis/synthesis transforms under autocast; the entropy model
            and the rate stay in float32 (:attr:`ChannelARCodec.transform_autocast`).
        channels_last: train in the channels-last memory layout.
    """

    def __init__(
        self,
        codec: nn.Module,
        loss: RateDistortionLoss,
        optimizer: OptimizerFactory,
        aux_optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        clip_max_norm: float = 1.0,
        max_nonfinite_steps: int = 5,
        transform_precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        autocast_dtype(transform_precision, torch.device("cpu"))  # refuse an unknown name now
        self.automatic_optimization = False
        self.transform_precision = transform_precision
        self.channels_last = channels_last
        self.codec = codec
        self.loss = loss
        self._optimizer = optimizer
        self._aux_optimizer = aux_optimizer
        self._scheduler = scheduler
        self.clip_max_norm = clip_max_norm
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_a_row = 0
        self.quality: float | None = None  # the current batch's (variable-rate codecs)
        # Plain data only: a training checkpoint must load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "codec": codec.codec_name,
                "codec_config": dict(codec.codec_config),
                "lmbda": loss.lmbda,
                "metric": loss.metric,
            }
        )

    def forward(self, x: Tensor):
        return self.codec(x)

    def on_fit_start(self) -> None:
        self.codec.transform_autocast = autocast_dtype(self.transform_precision, self.device)
        if self.channels_last:
            self.codec.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        self.codec.transform_autocast = None  # exported and evaluated in float32

    def trainable_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Parameters of the main and the auxiliary optimizer."""
        return split_parameters(self.codec)

    def draw_quality(self) -> tuple[float | None, float | None]:
        """This batch's quality and λ for a variable-rate codec; ``(None, None)`` otherwise."""
        if not getattr(self.codec, "variable_rate", False):
            return None, None
        low, high = self.codec.quality_range
        quality = low + (high - low) * float(torch.rand(()))
        quality = self.codec.check_quality(quality)
        self.log("train/quality", quality)
        return quality, self.codec.lmbda_at(quality)

    def extra_loss(self, batch: Tensor, output: Any) -> tuple[Tensor | float, dict[str, Tensor]]:
        """Terms added to the rate–distortion loss, and what to log of them (none here)."""
        return 0.0, {}

    def configure_optimizers(self):
        main, aux = self.trainable_parameters()
        optimizer = self._optimizer(main)
        aux_optimizer = self._aux_optimizer(aux)
        if self._scheduler is None:
            return [optimizer, aux_optimizer]
        scheduler = {"scheduler": self._scheduler(optimizer), "interval": "step"}
        return [optimizer, aux_optimizer], [scheduler]

    def _log_terms(self, prefix: str, terms: RateDistortionTerms, **kwargs: Any) -> None:
        values = {"loss": terms.loss, "bpp": terms.bpp, "mse": terms.mse, "psnr": terms.psnr}
        if terms.ms_ssim is not None:
            values["ms_ssim"] = terms.ms_ssim
        self.log_dict({f"{prefix}/{k}": v.detach() for k, v in values.items()}, **kwargs)

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        optimizer, aux_optimizer = self.optimizers()
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        self.quality, lmbda = self.draw_quality()
        output = self.codec(batch, quality=self.quality) if self.quality else self.codec(batch)
        terms = self.loss(output, batch, lmbda)
        extra, extra_logs = self.extra_loss(batch, output)
        aux_loss = self.codec.aux_loss()
        total = terms.loss + extra + aux_loss
        finite = self.trainer.strategy.reduce_boolean_decision(
            bool(torch.isfinite(total)), all=True
        )
        if not finite:
            self.nonfinite_in_a_row += 1
            self.log("train/nonfinite", float(self.nonfinite_in_a_row), prog_bar=True)
            if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"loss was not finite for {self.nonfinite_in_a_row} steps in a row "
                    f"(last at step {self.global_step}); lower the learning rate or check the data"
                )
            return
        self.nonfinite_in_a_row = 0
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        self.manual_backward(total)
        if self.clip_max_norm > 0:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.clip_max_norm, gradient_clip_algorithm="norm"
            )
        optimizer.step()
        aux_optimizer.optimizer.step()  # raw step: not counted as another global step
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self._log_terms("train", terms, prog_bar=True)
        self.log("train/aux_loss", aux_loss.detach())
        if extra_logs:
            self.log_dict({k: v.detach() for k, v in extra_logs.items()})
        self.log("train/nonfinite", 0.0)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        precision, self.codec.transform_autocast = self.codec.transform_autocast, None
        lmbda = None  # a variable-rate codec: its middle quality, at that quality's λ
        if getattr(self.codec, "variable_rate", False):
            lmbda = self.codec.lmbda_at(self.codec.default_quality)
        terms = self.loss(self.codec(batch), batch, lmbda)  # validated in float32
        self.codec.transform_autocast = precision
        self._log_terms("val", terms, batch_size=batch.shape[0], sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lic_nonfinite_in_a_row"] = self.nonfinite_in_a_row

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_in_a_row = int(checkpoint.get("lic_nonfinite_in_a_row", 0))
