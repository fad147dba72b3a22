"""Built-in data for demos and tests, framework-neutral (numpy): scikit-learn's digits."""

from __future__ import annotations

import numpy as np


def load_digits_arrays(seed: int = 0):
    """Digits (8x8 images as 64 features, 10 classes) split 75/25 (stratified, ``seed``),
    standardized with the training set's statistics: ``(x_train, y_train, x_test, y_test)`` as
    float32 / int64 numpy arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    return (
        ((xtr - mean) / std).astype(np.float32),
        ytr.astype(np.int64),
        ((xte - mean) / std).astype(np.float32),
        yte.astype(np.int64),
    )
