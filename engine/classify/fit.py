"""Few-shot classifiers: nearest class mean (cosine prototypes) or logistic regression, in numpy.

Both end as one :class:`Linear` map from embeddings to class logits, so mapping a store
(:mod:`.land_use`) and cross-validating the classifier (:mod:`.validation`) run the very same
classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Linear:
    """Logits = x @ weight + bias; ``cosine`` marks unit-norm prototype weights."""

    weight: np.ndarray  # [D, C] float32
    bias: np.ndarray  # [C] float32
    cosine: bool


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def normalise_rows(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise InputError("a class prototype is a zero vector; check its prompts or examples")
    return (m / n).astype(np.float32)


def fit_logreg(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2, iters: int = 300
) -> Linear:
    """Multinomial logistic regression by Nesterov gradient descent, folded into raw-x weights.

    Features are standardised first (embedding dims have tiny, uneven spreads), classes are
    weighted inversely to their tile count so one large polygon does not swamp the others, and
    the start is all zeros, so the fit is deterministic.
    """
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = ((x - mu) / sd).astype(np.float64)
    n, d = z.shape
    onehot = np.eye(n_classes)[y]
    sw = (n / (n_classes * np.bincount(y, minlength=n_classes)))[y][:, None]
    # step 1/L, L bounding the gradient's Lipschitz constant (the +n accounts for the bias)
    lr = 1.0 / (0.5 * (np.linalg.norm(z, ord=2) ** 2 + n) * sw.max() / n + l2)
    w, b = np.zeros((d, n_classes)), np.zeros(n_classes)
    vw, vb = w.copy(), b.copy()
    for t in range(iters):
        mom = t / (t + 3.0)
        lw, lb = w + mom * vw, b + mom * vb
        g = sw * (softmax(z @ lw + lb) - onehot) / n
        gw, gb = z.T @ g + l2 * lw, g.sum(axis=0)
        vw, vb = mom * vw - lr * gw, mom * vb - lr * gb
        w, b = w + vw, b + vb
    weight = w / sd[:, None]
    return Linear(weight.astype(np.float32), (b - (mu / sd) @ w).astype(np.float32), False)


def fit_classifier(x: np.ndarray, y: np.ndarray, n: int, method: str, l2: float = 1e-2) -> Linear:
    """The few-shot classifier of ``method``: nearest class mean (cosine) or logistic regression.

    One place for :func:`from_examples` and the cross-validation of
    :mod:`.validation`, so the validated classifier is the one that maps.
    """
    if method == "prototype":
        protos = np.stack([x[y == i].mean(axis=0) for i in range(n)])
        return Linear(normalise_rows(protos).T, np.zeros(n, np.float32), True)
    return fit_logreg(x, y, n, l2=l2)
