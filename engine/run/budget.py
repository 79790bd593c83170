"""Run caps and the thread-safe token budget that enforces them.

A call reserves its prompt estimate plus its output limit before it starts and settles to the
real usage after, so concurrent nodes cannot together overrun the run's cap.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

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
    total_cost_usd: float | None = Field(
        None, ge=0.0, le=10_000.0, description="Most dollars the whole run may spend; None: no cap."
    )
    wall_time_s: float | None = Field(
        None, ge=1.0, le=86_400.0, description="Most seconds the run may take; None: no cap."
    )


@dataclass(frozen=True)
class Grant:
    """What one reservation set aside: tokens (prompt + output) and dollars."""

    tokens: int
    output_tokens: int
    cost_usd: float


class Meter:
    """Tokens and dollars left to a run or a node, shared by the threads that spend them.

    A call reserves its prompt estimate plus the output it is allowed before it starts and
    settles to what it really used after, so concurrent calls cannot together overrun the cap.
    A node reserves its whole allowance from the run's meter as a block and spends it through a
    meter of its own; what it leaves unspent goes back to the run, for the nodes still to run.
    ``cost_usd=None`` means no money cap.
    """

    def __init__(self, tokens: int, cost_usd: float | None = None):
        self.total = tokens
        self.total_cost_usd = cost_usd
        self._used = 0
        self._reserved = 0
        self._cost_used = 0.0
        self._cost_reserved = 0.0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    @property
    def cost_used(self) -> float:
        with self._lock:
            return self._cost_used

    @property
    def available(self) -> int:
        with self._lock:
            return self.total - self._used - self._reserved

    @property
    def available_cost(self) -> float | None:
        with self._lock:
            if self.total_cost_usd is None:
                return None
            return max(0.0, self.total_cost_usd - self._cost_used - self._cost_reserved)

    def reserve(
        self,
        prompt_tokens: int,
        wanted_output: int,
        *,
        price_in_per_m: float = 0.0,
        price_out_per_m: float = 0.0,
        min_output: int = MIN_OUTPUT_TOKENS,
    ) -> Grant | None:
        """Reserve room for one call; None if fewer than ``min_output`` tokens (or, for a call
        that wants fewer, all it wants) could be granted.

        The output granted may be smaller than ``wanted_output`` when a token or money cap is
        near; the dollars reserved assume every granted token is generated.
        """
        with self._lock:
            room = self.total - self._used - self._reserved - prompt_tokens
            granted = min(wanted_output, room)
            prompt_cost = prompt_tokens * price_in_per_m / 1_000_000
            if self.total_cost_usd is not None:
                money = self.total_cost_usd - self._cost_used - self._cost_reserved - prompt_cost
                if money < 0:
                    return None
                if price_out_per_m > 0:
                    granted = min(granted, int(money * 1_000_000 / price_out_per_m))
            if granted < min(min_output, wanted_output):  # a call may want fewer than 16
                return None
            cost = prompt_cost + granted * price_out_per_m / 1_000_000
            self._reserved += prompt_tokens + granted
            self._cost_reserved += cost
            return Grant(prompt_tokens + granted, granted, cost)

    def reserve_block(self, tokens: int, cost_usd: float | None) -> Grant:
        """Set aside up to ``tokens`` and ``cost_usd`` (None: no money limit) for a node."""
        with self._lock:
            block = max(0, min(tokens, self.total - self._used - self._reserved))
            if self.total_cost_usd is None:
                cost = cost_usd if cost_usd is not None else 0.0
            else:
                left = max(0.0, self.total_cost_usd - self._cost_used - self._cost_reserved)
                cost = left if cost_usd is None else max(0.0, min(cost_usd, left))
            self._reserved += block
            self._cost_reserved += cost if self.total_cost_usd is not None else 0.0
            return Grant(block, block, cost)

    def settle_grant(self, grant: Grant, used_tokens: int, used_cost: float) -> None:
        """Replace a reservation by what was really used."""
        with self._lock:
            self._reserved -= grant.tokens
            self._used += used_tokens
            if self.total_cost_usd is not None:
                self._cost_reserved -= grant.cost_usd
            self._cost_used += used_cost


class TokenBudget(Meter):
    """A token-only meter with the older int-based calls (kept for scripts written against it)."""

    def reserve_call(self, prompt_tokens: int, wanted_output: int) -> int | None:
        """Reserve room for one call; returns the output tokens granted, or None if too little."""
        grant = self.reserve(prompt_tokens, wanted_output)
        return None if grant is None else grant.output_tokens

    def settle(self, reserved: int, used: int) -> None:
        """Replace a reservation of ``reserved`` tokens by what the call really used."""
        self.settle_grant(Grant(reserved, 0, 0.0), used, 0.0)
