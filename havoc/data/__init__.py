"""Training data: weighted streamed sources (`sources`), tokenization with loss masks and packing with
document boundaries (`packing`). A small corpus written for the tiny CPU configs ships in `corpus/`."""

from havoc.data.packing import IGNORE_INDEX, Packer, encode_pretrain, encode_sft
from havoc.data.sources import Mixture, Source

__all__ = ["IGNORE_INDEX", "Mixture", "Packer", "Source", "encode_pretrain", "encode_sft"]
