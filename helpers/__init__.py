"""The AlexNet-on-CIFAR-10 course's package, by audience.

What the notebooks import: `course` (set-up, reduced mode, folders), `data` (01), `models` (02), `training` (03),
`evaluation` (04), `ablation` (05), `speed` (06), `device`. The two commands: `commands`, run as `python -m helpers.train`
and `python -m helpers.ablation`. Below them all, `plumbing` (checks, atomic files, the downloader), which imports nothing
from the course.
"""

__version__ = "0.1.0"
