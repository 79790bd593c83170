"""Run caps and the thread-safe token budget that enforces them.

A call reserves its prompt estimate plus its output limit before it starts and settles to the
real usage after, so concurrent nodes cannot together overrun the run's cap.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, Field

#: A call that cannot be granted at least this many output tokens is not started.
MIN_OUTPUT_TOKENS = 16


class RunCaps(BaseModel):
    """Limits for one run. The UI's sliders read these bounds."""

    total_tokens: int = Field(
        6000, ge=100, le=200_000, description="Most tokens (input + output) the whole run may use."
    )
    max_tokens_per_node: int = Field(
        256, ge=MIN_OUTPUT_TOKENS, le=8192, description="Most output tokens one node may generate."
    )
    max_parallel: int = Field(
        4, ge=1, le=32, description="Most nodes running at once (calls to one local model queue)."
    )


class TokenBudget:
    """Tokens left in a run, shared by the worker threads."""

    def __init__(self, total: int):
        self.total = total
        self._used = 0
        self._reserved = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    @property
    def available(self) -> int:
        with self._lock:
            return self.total - self._used - self._reserved

    def reserve_call(self, prompt_tokens: int, wanted_output: int) -> int | None:
        """Reserve room for one call; returns the output tokens granted, or None if too little.

        The grant may be smaller than ``wanted_output`` when the cap is near.
        """
        with self._lock:
            room = self.total - self._used - self._reserved - prompt_tokens
            granted = min(wanted_output, room)
            if granted < MIN_OUTPUT_TOKENS:
                return None
            self._reserved += prompt_tokens + granted
            return granted

    def settle(self, reserved: int, used: int) -> None:
        """Replace a reservation by what the call really used."""
        with self._lock:
            self._reserved -= reserved
            self._used += used
