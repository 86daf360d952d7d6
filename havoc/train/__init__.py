"""Training: run configs (`config`), per-parameter 8-bit paged AdamW with stochastic rounding (`optim`),
the trainer (`trainer`) and the GPU memory planner (`memory`). Shipped phase configs are in `configs/`."""

from havoc.train.config import TrainConfig

__all__ = ["TrainConfig"]
