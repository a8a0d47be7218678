"""Erasure: deleting a person's data from every store that keeps events, with an audit trail."""

from stellwerk.erasure.criterion import CRITERION_SCHEMA, Criterion, InvalidCriterion, parse
from stellwerk.erasure.runner import ErasureMetrics, ErasureRunner
from stellwerk.erasure.suppression import Suppressions

__all__ = [
    "CRITERION_SCHEMA",
    "Criterion",
    "ErasureMetrics",
    "ErasureRunner",
    "InvalidCriterion",
    "Suppressions",
    "parse",
]
