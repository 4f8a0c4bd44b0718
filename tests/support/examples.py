"""How many examples a property test draws: the full count in `make test`, a small one in `make test-fast`.

`HYPOTHESIS_PROFILE=fast` (set by `make test-fast`) caps every property test at a few examples so the tier answers
in about a minute; `make test` runs the full count each test asks for.
"""

from __future__ import annotations

import os

__all__ = ["examples"]

_FAST_CAP = 10


def examples(full: int) -> int:
    """`full` examples, or a few of them in the fast tier."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "fast":
        return min(full, _FAST_CAP)
    return full
