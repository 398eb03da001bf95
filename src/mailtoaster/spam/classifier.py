"""The statistical classifier: Robinson's token probabilities, Fisher's chi-square combining.

This is the method SpamBayes, bogofilter and SpamAssassin's Bayes share (Gary Robinson, "A Statistical
Approach to the Spam Problem", Linux Journal 2003; SpamBayes' ``classifier.py`` for the details that
matter in practice):

1. For a token seen in ``s`` of ``S`` learned spam and ``h`` of ``H`` learned ham, the raw spam
   probability is ``p = (s/S) / (s/S + h/H)`` — ratios, so an unequal number of spam and ham learned
   does not bias it.
2. Robinson's correction pulls rarely seen tokens towards "no idea":
   ``f = (strength * x + n * p) / (strength + n)`` with ``n = s + h``, ``x = 0.5`` (the
   probability of a token never seen) and ``strength = 0.45`` (how many messages' worth of evidence
   that prior is worth). A token seen once is not a certainty.
3. Only telling tokens count: those with ``|f - 0.5| >= min_deviation`` (0.1), at most the
   ``max_clues`` (150) strongest. Mild evidence from hundreds of common words would otherwise drown
   the few tokens that decide.
4. Fisher's method combines them twice. If the clues were random, ``-2 Σ ln f`` would follow a
   chi-square distribution with ``2n`` degrees of freedom; ``H = 1 - Q(-2 Σ ln f, 2n)`` (``Q`` the
   chi-square survival function) is how surely they are not random but pulled towards 0, the
   hamminess, and ``S = 1 - Q(-2 Σ ln(1 - f), 2n)`` likewise the spamminess. The indicator
   ``(1 + S - H) / 2`` is near 1
   when the clues say spam, near 0 for ham, and near 0.5 both when there is little evidence and when
   strong evidence points both ways — which is what makes the method honest about being unsure.

No probability at all is given until both classes have ``min_learned`` messages (200, as
SpamAssassin's ``bayes_min_spam_num``/``bayes_min_ham_num``): a filter trained on a handful of
messages is mostly noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from mailtoaster.spam.counts import CountsTable
from mailtoaster.spam.store import TokenCounts, Totals

DEFAULT_MIN_LEARNED = 200


@dataclass(frozen=True)
class BayesParams:
    strength: float = 0.45
    """Robinson's *s*: the weight, in messages, of the prior for a token."""
    unknown_prob: float = 0.5
    """Robinson's *x*: the probability of a token never seen."""
    min_deviation: float = 0.1
    """Tokens with ``|f - 0.5|`` below this are not clues."""
    max_clues: int = 150
    min_learned: int = DEFAULT_MIN_LEARNED
    """Spam and ham messages each needed before any probability is given."""


class Clue(NamedTuple):
    """A named tuple, not a dataclass: scoring makes 150 per message, and that shows."""

    token: str
    probability: float
    """Robinson's *f*: near 1 speaks for spam, near 0 for ham."""
    spam: int
    ham: int


@dataclass(frozen=True)
class BayesResult:
    probability: float | None
    """Fisher's indicator in [0, 1]; None when too few messages were learned to say anything."""
    clues: tuple[Clue, ...]
    """The clues used, strongest first."""
    totals: Totals
    """The learned messages of the scope that was read."""

    def telling(self, count: int = 10) -> tuple[Clue, ...]:
        """The ``count`` strongest clues."""
        return self.clues[:count]


def token_probability(counts: TokenCounts, totals: Totals, params: BayesParams) -> float:
    """Robinson's *f* for one token (steps 1 and 2 of the module docstring)."""
    spam = min(counts.spam, totals.spam)
    ham = min(counts.ham, totals.ham)
    spam_ratio = spam / totals.spam if totals.spam else 0.0
    ham_ratio = ham / totals.ham if totals.ham else 0.0
    if spam_ratio + ham_ratio == 0.0:
        return params.unknown_prob
    raw = spam_ratio / (spam_ratio + ham_ratio)
    seen = spam + ham
    return (params.strength * params.unknown_prob + seen * raw) / (params.strength + seen)


def chi2_survival(chi2: float, degrees: int) -> float:
    """P(X >= chi2) for a chi-square variable with an even number of degrees of freedom (the series
    of the Poisson distribution, exact for even degrees)."""
    half = chi2 / 2.0
    term = math.exp(-half)
    total = term
    for index in range(1, degrees // 2):
        term *= half / index
        total += term
    return min(total, 1.0)


def fisher_indicator(probabilities: Iterable[float]) -> float:
    """Fisher's combination of token probabilities into the [0, 1] indicator (step 4)."""
    log_f = 0.0
    log_1_minus_f = 0.0
    count = 0
    for probability in probabilities:
        log_f += math.log(probability)
        log_1_minus_f += math.log1p(-probability)
        count += 1
    if count == 0:
        return 0.5
    hamminess = 1.0 - chi2_survival(-2.0 * log_f, 2 * count)
    spamminess = 1.0 - chi2_survival(-2.0 * log_1_minus_f, 2 * count)
    return (1.0 + spamminess - hamminess) / 2.0


def select_clues(
    tokens: Iterable[str], counts: Mapping[str, TokenCounts], totals: Totals, params: BayesParams
) -> tuple[Clue, ...]:
    """The telling tokens (step 3), strongest first; ties keep the message's token order."""
    raw = counts.raw if isinstance(counts, CountsTable) else {t: (c.spam, c.ham) for t, c in counts.items()}
    if totals.spam <= 0 or totals.ham <= 0:
        return ()
    spam_total, ham_total = totals.spam, totals.ham
    prior = params.strength * params.unknown_prob
    strength, floor = params.strength, params.min_deviation
    candidates = []
    for token in tokens:
        found = raw.get(token)
        if found is None:
            continue  # never learned: f = x = 0.5, never a clue
        spam, ham = found
        if spam > spam_total:
            spam = spam_total
        if ham > ham_total:
            ham = ham_total
        seen = spam + ham
        if seen == 0:
            continue
        spam_ratio = spam / spam_total
        probability = (prior + seen * spam_ratio / (spam_ratio + ham / ham_total)) / (strength + seen)
        deviation = probability - 0.5 if probability > 0.5 else 0.5 - probability
        if deviation >= floor:
            candidates.append((deviation, token, probability, spam, ham))
    candidates.sort(key=itemgetter(0), reverse=True)
    return tuple(Clue(token, p, s, h) for _d, token, p, s, h in candidates[: params.max_clues])


def classify(
    tokens: Iterable[str], counts: Mapping[str, TokenCounts], totals: Totals, params: BayesParams
) -> BayesResult:
    """The Bayes result for a message's tokens, given the scope's counts for them and its totals."""
    if totals.spam < params.min_learned or totals.ham < params.min_learned:
        return BayesResult(None, (), totals)
    clues = select_clues(tokens, counts, totals, params)
    return BayesResult(fisher_indicator(clue.probability for clue in clues), clues, totals)
