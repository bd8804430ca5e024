"""What ``groundwire eval`` assumes when not told, and its exit statuses: apart from the
command's arguments so that the run and the gates can read them without importing the
command module (which imports the run)."""

from __future__ import annotations

from pathlib import Path

MODE_NAMES = ("dense", "sparse", "hybrid")
DEFAULT_DATA_DIR = Path("data/eval")
DEFAULT_OUTPUT_ROOT = Path("results/eval")
LONG_QUERIES = ("truncate", "skip")
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 3
