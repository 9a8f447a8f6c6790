"""Helpers for the AlexNet-on-CIFAR-10 course: data, models, training, plots."""

__version__ = "0.1.0"
