"""The spam filter: a Bayesian classifier that learns, SpamAssassin-compatible scoring, Junk learning.

:class:`SpamFilter` is the entry point (score, learn); :class:`SqliteTokenStore` the embedded token
store; ``docs/spam.md`` describes the tokenizer, the classifier's maths, the rules and the store.
"""

from mailtoaster.spam.classifier import BayesParams, BayesResult, Clue
from mailtoaster.spam.filter import LearnOutcome, SpamFilter, message_digest
from mailtoaster.spam.memory import MemoryTokenStore
from mailtoaster.spam.scoring import (
    DEFAULT_REQUIRED,
    RULES,
    Rule,
    RuleHit,
    SpamScore,
    render_fields,
    score_message,
    spam_fields,
)
from mailtoaster.spam.sqlite import SqliteTokenStore
from mailtoaster.spam.store import (
    Label,
    StoreStats,
    TokenCounts,
    TokenStore,
    TokenStoreUnavailable,
    Totals,
)

__all__ = [
    "DEFAULT_REQUIRED",
    "RULES",
    "BayesParams",
    "BayesResult",
    "Clue",
    "Label",
    "LearnOutcome",
    "MemoryTokenStore",
    "Rule",
    "RuleHit",
    "SpamFilter",
    "SpamScore",
    "SqliteTokenStore",
    "StoreStats",
    "TokenCounts",
    "TokenStore",
    "TokenStoreUnavailable",
    "Totals",
    "message_digest",
    "render_fields",
    "score_message",
    "spam_fields",
]
