"""Speed, notebook 06's topic: `measure` times training steps and loaders and estimates the device's peak FLOP/s;
`records` reads the time-to-accuracy benchmark's runs and the recipe search's log from results/."""

from .measure import (
    GPU_PEAK_TFLOPS,
    Setting,
    compare_throughput,
    compile_note,
    cpu_peak_flops,
    device_peak,
    gpu_peak_flops,
    loader_throughput,
    throughput,
    upstream_timing_batch,
)
from .records import (
    benchmark_runs,
    plot_time_to_accuracy,
    projected_time_to,
    recipe_name,
    recipe_search_table,
    search_verdicts,
    side_by_side_ratios,
    time_to_accuracy_table,
)
