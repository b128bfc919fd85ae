"""The cascade's verdict: is a cheap backend's answer good enough to keep? Learned from
recorded answers.

Whether a cheap model gets a query right is barely visible in the prompt (per-model AUC of
the prompt predictor ~0.66) but often visible in its answer: two cheap backends that give the
same closed-form answer are usually right, an answer with no extractable choice or a very long
one usually is not. The verdict is the probability that *keeping the first answer loses
nothing against escalating*: the first answer is right, or the escalation tier would have been
wrong too (then paying for it buys nothing). This module owns that judgement:

* :func:`extract_choice`: the closed-form answer of a text ("B", "(B)", "B) ...",
  "Answer: B", "... the answer is (B)"), or ``None``;
* :class:`AnswerFacts` and :func:`verdict_features`: what the verdict looks at for the first
  backend's answer and, optionally, a second ("check") backend's answer to the same query:
  the predictor's P(success) of each and of the escalation tier, whether their closed-form
  answers agree, whether a closed form was found, and the answers' lengths;
* :class:`VerdictModel`: a logistic regression over those features, pooled over backend
  pairs (so it applies to any pair the gateway is configured with), fitted on recorded
  answers (:func:`fit_verdict`, :func:`pair_rows`) and stored in the predictor artifact as
  two arrays (:meth:`VerdictModel.to_arrays`).

Pure numpy at inference; scikit-learn only to fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

FEATURES = (
    "logit_p_escalation",
    "logit_p_first",
    "first_closed",
    "log_chars_first",
    "has_check",
    "logit_p_check",
    "comparable",
    "agree",
    "agree_x_logit_p_check",
    "log_chars_check",
)

_LETTER = r"\(?([A-P])\b\)?"  # upper case only: "the answer is a ..." is prose
_PATTERNS = (
    re.compile(r"(?i:answer is):?\s*" + _LETTER),
    re.compile(r"(?i:answer):\s*" + _LETTER),
)
_LEADING = re.compile(r"^\s*\(?([A-P])(?:[).:]|\s*$)")


def extract_choice(text: str | None) -> str | None:
    """The multiple-choice letter an answer commits to, or ``None``.

    The last "the answer is (X)" / "Answer: X" wins; else an answer that is a lone letter or
    starts with a labelled one ("B", "(B)", "B) Logan", "B."; not "I think" or "A good one").
    Anything else (prose, code) has no closed form.
    """
    if not text:
        return None
    found = [(m.start(), m.group(1).upper()) for p in _PATTERNS for m in p.finditer(text)]
    if found:
        return max(found)[1]
    m = _LEADING.match(text)
    return m.group(1).upper() if m else None


@dataclass(frozen=True, slots=True)
class AnswerFacts:
    """One backend's answer to the query, as the verdict sees it."""

    #: The predictor's P(success) for this backend on this query (calibrated).
    p_success: float
    #: The closed-form answer (:func:`extract_choice`), ``None`` when there is none.
    choice: str | None
    #: Length of the answer text in characters.
    chars: int


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def verdict_features(
    p_escalation: float, first: AnswerFacts, check: AnswerFacts | None = None
) -> np.ndarray:
    """The feature vector (order: :data:`FEATURES`) of a first answer and an optional check;
    ``p_escalation``: the predictor's P(success) of the escalation tier."""
    closed = 1.0 if first.choice else 0.0
    row = [_logit(p_escalation), _logit(first.p_success), closed, math.log1p(first.chars)]
    if check is None:
        return np.array(row + [0.0] * 6, dtype=np.float32)
    comparable = 1.0 if first.choice and check.choice else 0.0
    agree = 1.0 if comparable and first.choice == check.choice else 0.0
    lp = _logit(check.p_success)
    row += [1.0, lp, comparable, agree, agree * lp, math.log1p(check.chars)]
    return np.array(row, dtype=np.float32)


@dataclass(frozen=True)
class VerdictModel:
    """``P(keeping the first answer loses nothing) = sigmoid(bias + weights . features)``."""

    weights: np.ndarray
    bias: float

    def p_keep(
        self, p_escalation: float, first: AnswerFacts, check: AnswerFacts | None = None
    ) -> float:
        """The verdict for one request (the input of ``policies.cascade.cascade_step``)."""
        z = float(self.bias + self.weights @ verdict_features(p_escalation, first, check))
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))

    def p_keep_batch(self, features: np.ndarray) -> np.ndarray:
        z = np.clip(features @ self.weights + self.bias, -40.0, 40.0)
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the artifact (``verdict_w`` in :data:`FEATURES` order, ``verdict_b``)."""
        return {
            "verdict_w": self.weights.astype(np.float32),
            "verdict_b": np.array([self.bias], dtype=np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> VerdictModel | None:
        if "verdict_w" not in arrays:
            return None
        w = np.asarray(arrays["verdict_w"], dtype=np.float32)
        if w.shape != (len(FEATURES),):
            raise ValueError(f"verdict_w has shape {w.shape}, expected ({len(FEATURES)},)")
        return cls(w, float(arrays["verdict_b"][0]))


def feature_matrix(
    p_escalation: np.ndarray,
    p_first: np.ndarray,
    choice_first: np.ndarray,
    chars_first: np.ndarray,
    p_check: np.ndarray | None = None,
    choice_check: np.ndarray | None = None,
    chars_check: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`verdict_features` for many queries at once (choices: "" = none)."""

    def logit(p: np.ndarray) -> np.ndarray:
        q = np.clip(np.asarray(p, dtype=float), 1e-3, 1 - 1e-3)
        return np.asarray(np.log(q / (1 - q)))

    n = len(p_first)
    closed = (np.asarray(choice_first) != "").astype(float)
    cols = [logit(p_escalation), logit(p_first), closed]
    cols.append(np.log1p(np.asarray(chars_first, dtype=float)))
    if p_check is None or choice_check is None or chars_check is None:
        cols += [np.zeros(n)] * 6
    else:
        comparable = closed * (np.asarray(choice_check) != "")
        agree = comparable * (np.asarray(choice_first) == np.asarray(choice_check))
        lp = logit(p_check)
        cols += [np.ones(n), lp, comparable, agree, agree * lp]
        cols.append(np.log1p(np.asarray(chars_check, dtype=float)))
    return np.column_stack(cols).astype(np.float32)


def pair_rows(
    p: np.ndarray,
    outcome: np.ndarray,
    answers: np.ndarray,
    chars: np.ndarray,
    pairs: Sequence[tuple[int, int | None]],
    escalation: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Training rows for the verdict: per query and per ``(first, check)`` column pair
    (``check`` None: first answer alone), the features and the label "keeping ``first``'s
    answer loses nothing against column ``escalation``" (outcome first >= outcome escalation).

    ``p`` are the predictor's *out-of-fold* probabilities (n, m) (in-sample ones would teach
    the verdict to trust the predictor too much); ``answers`` (n, m) closed-form answers
    ("" none), ``chars`` (n, m) answer lengths, ``outcome`` (n, m) (NaN: unknown).
    """
    xs, ys = [], []
    pe = p[:, escalation]
    for a, b in pairs:
        keep = ~np.isnan(outcome[:, a]) & ~np.isnan(outcome[:, escalation])
        keep &= ~np.isnan(chars[:, a])
        if b is None:
            x = feature_matrix(pe[keep], p[keep, a], answers[keep, a], chars[keep, a])
        else:
            keep &= ~np.isnan(chars[:, b])
            x = feature_matrix(
                pe[keep],
                p[keep, a],
                answers[keep, a],
                chars[keep, a],
                p[keep, b],
                answers[keep, b],
                chars[keep, b],
            )
        xs.append(x)
        ys.append(outcome[keep, a] >= outcome[keep, escalation])
    if not xs:
        return np.zeros((0, len(FEATURES)), dtype=np.float32), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys).astype(float)


def fit_verdict(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> VerdictModel:
    """L2-penalised logistic regression (scikit-learn) on verdict features."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0 / l2, max_iter=2000)
    clf.fit(x, y.astype(int))
    return VerdictModel(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]))
