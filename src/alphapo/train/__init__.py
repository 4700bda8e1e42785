"""The trainer: ``alphapo train`` (preference losses) and ``alphapo sft`` (supervised), one loop.

from alphapo.train import TrainConfig, train
from alphapo.config import load_config
result = train(load_config(TrainConfig, "tiny_cpu.yaml", ["train.max_steps=10"]))
"""

from alphapo.train.config import TrainConfig
from alphapo.train.loop import TrainingError, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "train"]
