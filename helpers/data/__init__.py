"""CIFAR-10 for the course: `cifar10` reads the official batches (downloading them if allowed), checks and caches them
and cuts the validation split; `batches` turns a split into augmented batches on the device; `explore` is notebook 01's
statistics and image grids."""

from .batches import DeviceLoader, classic_loader, normalize, random_crop, random_flip
from .cifar10 import CACHE_FILE, CIFAR10_MEAN, CIFAR10_STD, CLASSES, default_root, load_cifar10, split_validation
from .explore import bytes_per_image, channel_stats, measure_throughput, official_md5_matches, pixel_histogram, show_images
