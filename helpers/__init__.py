"""Helpers for the AlexNet-on-CIFAR-10 course: data, models, training, plots.

Each module holds one idea; the notebooks import what they teach, e.g.
`from helpers.data import load_cifar10` or `from helpers.train import train`.
"""

__version__ = "0.1.0"
