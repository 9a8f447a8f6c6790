"""The first code cell of every notebook: device, mode banner, plotting defaults."""

from __future__ import annotations

import sys

import torch

from .device import describe_device, pick_device
from .mode import mode_banner


def start(seed: int = 0) -> torch.device:
    """Pick the device, seed everything, set plot defaults and print what this run is (every notebook)."""
    import matplotlib.pyplot as plt

    from .train import seed_everything

    device = pick_device()
    seed_everything(seed)
    enable_colab_widgets()
    plt.rcParams.update({"figure.dpi": 90, "axes.spines.top": False, "axes.spines.right": False})
    print(describe_device(device))
    print(mode_banner())
    if device.type == "cpu":
        print("No GPU found: the course picks its CPU recipe. On Colab: Runtime > Change runtime type > GPU.")
    return device


def enable_colab_widgets() -> bool:
    """On Colab, switch on its custom widget manager so ipywidgets 8 controls render; elsewhere do nothing (every notebook)."""
    if "google.colab" not in sys.modules:
        return False
    # Colab's default manager knows only the ipywidgets release Colab ships; the custom one loads the
    # JavaScript of the installed ipywidgets (8 here), without which the controls do not render.
    from google.colab import output

    output.enable_custom_widget_manager()
    return True
