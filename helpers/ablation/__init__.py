"""The ablation study of notebook 05: `spec` (the variants, as data), `runner` (training them, resumable), `store`
(their results files) and `report` (paired verdicts and charts). The command: `python -m helpers.ablation`."""

from .report import paired_difference, plot_differences, plot_sweep, summarize_sweep
from .runner import estimate_seconds, recorded_runs, run_sweep
from .spec import BASELINE, GROUPS, VARIANTS, Group, Variant, groups_for_device, select_variants, variant_by_name, variant_recipe
from .store import default_output, sweep_records
