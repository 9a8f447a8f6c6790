"""`python -m helpers.ablation`: run the ablation sweep; the command lives in helpers.commands."""

from ..commands import ablation_command

raise SystemExit(ablation_command())
