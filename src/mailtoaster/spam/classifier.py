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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

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
    strong_spam: float = 0.95
    """A token with ``f`` at least this counts in :attr:`BayesResult.spam_tokens`."""


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
    clues: Sequence[Clue]
    """The clues used, strongest first (a tuple, or the :class:`Clues` the classifier gives)."""
    totals: Totals
    """The learned messages of the scope that was read."""
    spam_tokens: int = 0
    """How many of the message's tokens (all of them, not only the clues) are almost only seen in
    spam (``f >= strong_spam``). Fisher's method calls a message unsure when strong evidence points
    both ways, which is what spam padded with copied text looks like: dozens of spam tokens, and the
    padding's ham tokens. This count keeps what the combination throws away (a scoring rule reads it)."""

    def telling(self, count: int = 10) -> tuple[Clue, ...]:
        """The ``count`` strongest clues."""
        return tuple(self.clues[:count])


class Clues(Sequence[Clue]):
    """A message's clues, strongest first, each made into a :class:`Clue` only when read: the
    classifier chooses up to 150, and scoring reads the ten strongest (a third of the time of
    classifying went into making the other 140). Equal to any sequence of the same clues."""

    __slots__ = ("_ham", "_positions", "_probabilities", "_spam", "_tokens")

    def __init__(
        self, tokens: Sequence[str], table: CountsTable, chosen: NDArray[np.intp], f: NDArray[np.float64]
    ) -> None:
        """``chosen``: the clues' positions in ``tokens`` and ``table``; ``f``: their probabilities."""
        self._tokens = tokens
        self._positions = chosen
        self._probabilities = f
        self._spam = table.spam[chosen]
        self._ham = table.ham[chosen]

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> Clue: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Clue, ...]: ...

    def __getitem__(self, index: int | slice) -> Clue | tuple[Clue, ...]:
        if isinstance(index, slice):
            return self._made(index)
        position = range(len(self))[index]  # IndexError past the end, as a tuple's
        return self._made(slice(position, position + 1))[0]

    def _made(self, wanted: slice) -> tuple[Clue, ...]:
        positions = self._positions[wanted].tolist()
        tokens = map(self._tokens.__getitem__, positions)
        probabilities = self._probabilities[wanted].tolist()
        spam, ham = self._spam[wanted].tolist(), self._ham[wanted].tolist()
        return tuple(map(_clue, zip(tokens, probabilities, spam, ham, strict=True)))

    def __iter__(self) -> Iterator[Clue]:
        return iter(self._made(slice(None)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


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
    of the Poisson distribution, exact for even degrees): ``e^-h (1 + h/1 + h^2/2! + ...)`` to
    ``degrees / 2`` terms, ``h = chi2 / 2``. Each term is the one before times ``h / i`` and the sum
    runs from the first term on, as a loop would do them, in two numpy accumulations (a product, then
    a sum), which do the same operations in the same order: the same result to the last bit, in a
    third of the time of the loop."""
    half = chi2 / 2.0
    count = degrees // 2
    if count <= 1:
        return min(math.exp(-half), 1.0)
    factors = np.empty(count)
    factors[0] = math.exp(-half)
    np.divide(half, np.arange(1, count, dtype=np.float64), out=factors[1:])
    terms = np.multiply.accumulate(factors)
    return min(float(np.add.accumulate(terms)[-1]), 1.0)


def fisher_indicator(probabilities: Iterable[float]) -> float:
    """Fisher's combination of token probabilities into the [0, 1] indicator (step 4)."""
    log_f = 0.0
    log_1_minus_f = 0.0
    count = 0
    for probability in probabilities:
        log_f += math.log(probability)
        log_1_minus_f += math.log1p(-probability)
        count += 1
    return _combine(log_f, log_1_minus_f, count)


_clue = partial(tuple.__new__, Clue)  # a Clue without a named tuple's Python-level __new__: 150 a message


def _count_arrays(tokens: Sequence[str], counts: Mapping[str, TokenCounts]) -> CountsTable:
    """The counts as arrays aligned with ``tokens``: the store's own when it answered with a
    :class:`~mailtoaster.spam.counts.CountsTable` for this token list, made from the mapping otherwise."""
    if isinstance(counts, CountsTable) and (counts.tokens is tokens or counts.tokens == tokens):
        return counts
    found = map(counts.get, tokens)
    return CountsTable.of_pairs(tokens, ((known.spam, known.ham) if known else None for known in found))


def _clues(
    table: CountsTable, totals: Totals, params: BayesParams
) -> tuple[NDArray[np.intp], NDArray[np.float64], int]:
    """Steps 1 to 3 for all the tokens at once: the clues' positions in the token list, strongest
    first, every token's ``f``, and how many tokens have ``f >= strong_spam``. The arithmetic is
    :func:`token_probability`'s, operation for operation, so every ``f`` is the same to the last bit."""
    spam = np.minimum(table.spam, totals.spam)
    ham = np.minimum(table.ham, totals.ham)
    seen = spam + ham
    spam_ratio = spam / totals.spam
    ratios = spam_ratio + ham / totals.ham
    raw = np.divide(spam_ratio, ratios, out=np.zeros(len(seen)), where=ratios > 0.0)
    probability = (params.strength * params.unknown_prob + seen * raw) / (params.strength + seen)
    deviation = np.abs(probability - 0.5)
    telling = (seen > 0) & (deviation >= params.min_deviation) & (probability > 0.0) & (probability < 1.0)
    positions = telling.nonzero()[0]
    spam_tokens = int(np.count_nonzero(probability[positions] >= params.strong_spam))
    # Strongest first; a stable sort keeps the message's token order among equals.
    strongest = (-deviation[positions]).argsort(kind="stable")[: params.max_clues]
    return positions[strongest], probability, spam_tokens


def select_clues(
    tokens: Iterable[str], counts: Mapping[str, TokenCounts], totals: Totals, params: BayesParams
) -> tuple[Clue, ...]:
    """The telling tokens (step 3), strongest first; ties keep the message's token order."""
    return tuple(_make_clues(tokens, counts, totals, params)[0])


def _make_clues(
    tokens: Iterable[str], counts: Mapping[str, TokenCounts], totals: Totals, params: BayesParams
) -> tuple[Sequence[Clue], NDArray[np.float64], int]:
    """The clues, their ``f`` in the same order, and the number of strong spam tokens."""
    listed = tokens if isinstance(tokens, list | tuple) else list(tokens)
    if totals.spam <= 0 or totals.ham <= 0:
        return (), np.empty(0), 0
    table = _count_arrays(listed, counts)
    chosen, probability, spam_tokens = _clues(table, totals, params)
    probabilities = probability[chosen]
    return Clues(listed, table, chosen, probabilities), probabilities, spam_tokens


def _combine(log_f: float, log_1_minus_f: float, count: int) -> float:
    """Fisher's indicator from the sums of ln f and ln(1 - f) over ``count`` clues (step 4)."""
    if count == 0:
        return 0.5
    hamminess = _chi2_cdf(-2.0 * log_f, 2 * count)
    spamminess = _chi2_cdf(-2.0 * log_1_minus_f, 2 * count)
    return (1.0 + spamminess - hamminess) / 2.0


def _chi2_cdf(chi2: float, degrees: int) -> float:
    """``1 - chi2_survival(chi2, degrees)``, without the series when it is certain to be 1.0.

    Clear ham makes ``-2 Σ ln f`` far larger than the degrees of freedom: then every term of the
    series grows up to the last one, so the survival is at most ``k e^-h h^(k-1) / (k-1)!`` (``k``
    terms, ``h = chi2 / 2``). When that bound is below 2**-60, the summed survival is too (its
    rounding errors are a few hundred units in the last place), and 1 minus it rounds to exactly 1.0:
    the same result without the loop over up to 150 terms."""
    half = chi2 / 2.0
    terms = degrees // 2
    if half >= terms >= 1:
        log_bound = math.log(terms) - half + (terms - 1) * math.log(half) - math.lgamma(terms)
        if log_bound < _LOG_2_TO_MINUS_60:
            return 1.0
    return 1.0 - chi2_survival(chi2, degrees)


_LOG_2_TO_MINUS_60 = -60 * math.log(2.0)


def classify(
    tokens: Iterable[str], counts: Mapping[str, TokenCounts], totals: Totals, params: BayesParams
) -> BayesResult:
    """The Bayes result for a message's tokens, given the scope's counts for them and its totals."""
    if totals.spam < params.min_learned or totals.ham < params.min_learned:
        return BayesResult(None, (), totals)
    clues, probabilities, spam_tokens = _make_clues(tokens, counts, totals, params)
    log_f = float(np.log(probabilities).sum())
    log_1_minus_f = float(np.log1p(-probabilities).sum())
    return BayesResult(_combine(log_f, log_1_minus_f, len(clues)), clues, totals, spam_tokens)
