"""Training: recipes, the losses (and the upstream repository's two wrong ones), the one engine every notebook,
benchmark and command uses, checkpoints, the learning-rate range test, training curves and run folders."""

from .checkpoint import load_checkpoint
from .engine import evaluate, fit, make_optimizer, predict, recipe_loaders, train, weight_decay_share
from .losses import compute_loss, loss_gradients, softmax_ce_floor
from .lr_range import lr_range_test, plot_lr_range
from .plots import LivePlot, plot_history, plot_lr_schedule
from .pretrained import course_model
from .recipes import SCHEDULES, UPSTREAM_ACCURACY, Recipe, get_recipe, recipe_for_device
from .runs import describe_run, state_dict_differences, without_timing
