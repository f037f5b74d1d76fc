"""Conditional orders' public names, where their users import them: the record and the trigger
rules (`perpex.core.trigger_rules`) and the per-symbol book (`perpex.core.trigger_book`).

Stops, take-profits and trailing stops rest outside the order book until the watched price of
their working type reaches their trigger; `perpex.core.conditional` is the engine pass that
places what they fire.
"""

from __future__ import annotations

from perpex.core.trigger_book import MAX_CONDITIONAL_PER_ACCOUNT, MAX_TRAILING_PER_BOOK, TriggerBook
from perpex.core.trigger_rules import (
    CALLBACK_RATE_STEP_PPM,
    FALLS,
    MAX_CALLBACK_RATE_PPM,
    MIN_CALLBACK_RATE_PPM,
    RISES,
    ConditionalKind,
    ConditionalOrder,
    ConditionalReject,
    WorkingType,
    placed_order_type,
    shape_reject,
    trailing_activates,
    trailing_fires,
    trailing_trigger_ticks,
    trigger_direction,
    trigger_price_ticks,
    validate_conditional,
    would_trigger,
)

__all__ = [
    "CALLBACK_RATE_STEP_PPM",
    "FALLS",
    "MAX_CALLBACK_RATE_PPM",
    "MAX_CONDITIONAL_PER_ACCOUNT",
    "MAX_TRAILING_PER_BOOK",
    "MIN_CALLBACK_RATE_PPM",
    "RISES",
    "ConditionalKind",
    "ConditionalOrder",
    "ConditionalReject",
    "TriggerBook",
    "WorkingType",
    "placed_order_type",
    "shape_reject",
    "trailing_activates",
    "trailing_fires",
    "trailing_trigger_ticks",
    "trigger_direction",
    "trigger_price_ticks",
    "validate_conditional",
    "would_trigger",
]
