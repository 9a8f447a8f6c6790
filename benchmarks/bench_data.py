"""Data pipeline benchmark: load times, GPU-resident loader vs the classic DataLoader (with and without Resize(227)).

    python benchmarks/bench_data.py [--classic-images 5000] [--repeats 3] [--out results/bench_data_cpu.json]

All paths are measured side by side in one run on the same machine; throughput is the
median over --repeats passes. The GPU-resident loader goes over the whole training split
(shuffle + random crop + flip + normalise); the classic loaders over the first N images.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from helpers.data import CACHE_FILE, DeviceLoader, classic_loader, default_root, load_cifar10
from helpers.data.cifar10 import dataset_label
from helpers.device import describe_device, pick_device
from helpers.plumbing.files import atomic_write_json


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def drain(loader) -> int:
    return sum(len(y) for _, y in loader)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classic-images", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the classic path")
    p.add_argument("--out", default="results/bench_data_cpu.json")
    args = p.parse_args()

    device = pick_device()
    root = default_root()
    print(describe_device(device))
    # First load: parse the pickled batches (no cache); cached: the tensor file written by the first.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cifar-10-batches-py").symlink_to((root / "cifar-10-batches-py").resolve())
        first = [timed(lambda: load_cifar10(tmp, download=False, cache=False)) for _ in range(args.repeats)]
        timed(lambda: load_cifar10(tmp, download=False))  # writes the cache
        assert (Path(tmp) / CACHE_FILE).is_file()
        cached = [timed(lambda: load_cifar10(tmp, download=False)) for _ in range(args.repeats)]
    data = load_cifar10(root, download=False)

    results = {}
    gpu = DeviceLoader(data.train_images, data.train_labels, 256, device=device, channels_last=True)
    runs = [timed(lambda: drain(gpu)) for _ in range(args.repeats)]
    results["gpu_resident_32_augmented"] = {"images": gpu.num_samples, "seconds": runs}
    n = args.classic_images
    for name, size in (("classic_32", None), ("classic_resize_227", 227)):
        loader = classic_loader(data.train_images, data.train_labels, 128, size=size, augment=size is None,
                                limit=n, num_workers=args.workers)
        runs = [timed(lambda loader=loader: drain(loader)) for _ in range(args.repeats)]
        results[name] = {"images": n, "seconds": runs}
    for r in results.values():
        r["images_per_s"] = r["images"] / statistics.median(r["seconds"])

    record = {
        "benchmark": "data pipeline", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device), "torch": torch.__version__, "python": platform.python_version(),
        "data": dataset_label(root),
        "first_load_s": statistics.median(first), "cached_load_s": statistics.median(cached),
        "repeats": args.repeats, "classic_workers": args.workers, "loaders": results,
    }
    print(f"first load (parse batches): {record['first_load_s']:.2f} s   cached load: {record['cached_load_s']:.2f} s")
    for name, r in results.items():
        print(f"{name:28s} {r['images_per_s']:10.0f} images/s  ({r['images']} images, median of {args.repeats})")
    base = results["classic_resize_227"]["images_per_s"]
    print(f"GPU-resident vs classic Resize(227): {results['gpu_resident_32_augmented']['images_per_s'] / base:.0f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
