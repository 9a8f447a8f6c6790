"""The AlexNet family: `alexnet` builds any member from a ModelConfig or a named preset; `summary` looks inside one
(layer shapes, parameters, FLOPs)."""

from .alexnet import PRESETS, build_model, config_from_dict, count_parameters
from .summary import preset_table, step_flops, summary_frame, total_flops
