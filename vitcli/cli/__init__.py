"""The `vit` command line: each command turns options into a recipe and makes one call into the engine.

One module per command group (train, evaluate, tools), shared options in `options`, the error boundary
and result output in `output`. torch is imported only inside command bodies, so `vit --help`, `vit
models` and `vit recipe check` answer at once. Every user error is a `VitError`, caught in
`output.handle_errors`, printed as one line, exit code 2.
"""

from __future__ import annotations

import os

# Must be set before torch loads. OpenMP threads that spin while waiting for each other slow a loaded
# CPU down up to 10x (measured: a demo step took 3-4 s instead of 0.35 s next to another busy process);
# sleeping instead costs microseconds per parallel region. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vitcli.cli import train, evaluate, tools  # noqa: E402,F401 - registers the commands on the app
from vitcli.cli.app import app, main, recipe_app  # noqa: E402

__all__ = ["app", "main", "recipe_app"]
