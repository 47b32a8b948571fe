"""How the report tells two configurations apart: the mean of their per-image difference over
test images and seeds, with an interval that counts both as sources of chance.

Every Problem 4 configuration is trained with the same seeds and scored on the same 20 test
images, so a difference between two of them (or any contrast of several) is a matrix
``D[s, i]``: the contrast of their thresholded Dice on image ``i`` for seed ``s``. Its mean
over the matrix is the effect. Seeds and images are two crossed random factors: a seed moves
every image's score, and an image is hard for every seed. The interval follows the two-way
random-effects model ``D[s, i] = mu + a_s + b_i + e_si``::

    var(mean) = (MS_seed + MS_image - MS_residual) / (S I)

with Student's t at Satterthwaite's degrees of freedom. Where that variance is not positive
(``MS_seed + MS_image <= MS_residual``) or leaves fewer than ``MIN_DF`` degrees of freedom, the
residual term is dropped: ``(MS_seed + MS_image) / (S I)``, whose expectation exceeds the true
variance of the mean by ``sigma_residual^2 / (S I)``, so the interval can only be too wide, at
Satterthwaite's degrees of freedom for those two terms (at least the smaller of ``S - 1`` and
``I - 1``). Resampling the ``S I`` cells as if independent would ignore that a
seed moves all its images together; with three seeds that interval covers the true effect far
too rarely (``tests/test_stats.py`` measures both). With one seed, or one image, it is the
paired t interval over the other factor.
"""
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_DF = 2  # fewer degrees of freedom than this and the two-way model's interval is not used


@dataclass(frozen=True)
class Interval:
    """A mean difference and its two-sided interval at ``level``; ``rule`` says how it was made:
    "two-way" (the random-effects model), "upper bound" (its residual term dropped) or
    "one-factor" (one seed or one image: the paired t interval)."""
    mean: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_images: int
    rule: str = "two-way"

    @property
    def holds_zero(self) -> bool:
        """The runs cannot tell the two sides apart at this level."""
        return bool(self.low <= 0.0 <= self.high)


def difference_interval(D, level: float = 0.95) -> Interval:
    """The mean of ``D`` (seeds × images) and its interval under the two-way random-effects
    model of the module's docstring."""
    D = np.asarray(D, dtype=float)
    if D.ndim != 2 or D.size < 2 or np.isnan(D).any():
        raise ValueError(f"a difference needs a seeds x images matrix of at least two numbers, got shape {D.shape}")
    S, I = D.shape
    mean = float(D.mean())
    if S == 1 or I == 1:  # one factor only: the paired t interval over it
        return _paired_t(D.ravel(), level, S, I, "one-factor")
    seed_means, image_means = D.mean(1), D.mean(0)
    ms_seed = I * ((seed_means - mean) ** 2).sum() / (S - 1)
    ms_image = S * ((image_means - mean) ** 2).sum() / (I - 1)
    residual = D - seed_means[:, None] - image_means[None, :] + mean
    ms_residual = (residual ** 2).sum() / ((S - 1) * (I - 1))
    terms = [(ms_seed, S - 1), (ms_image, I - 1), (-ms_residual, (S - 1) * (I - 1))]
    combined = sum(ms for ms, _ in terms)
    df = combined ** 2 / sum(ms ** 2 / df for ms, df in terms) if combined > 0 else 0.0
    rule = "two-way"
    if combined <= 0 or df < MIN_DF:  # the model cannot be used: its variance without the residual term
        combined, rule = ms_seed + ms_image, "upper bound"
        if combined == 0:  # every cell the same: no chance left to count
            return Interval(mean, mean, mean, level, S, I, rule)
        df = combined ** 2 / (ms_seed ** 2 / (S - 1) + ms_image ** 2 / (I - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * np.sqrt(combined / (S * I))
    return Interval(mean, float(mean - half), float(mean + half), level, S, I, rule)


def _paired_t(values, level, S, I, rule) -> Interval:
    """Student's t interval of the mean of ``values`` (n - 1 degrees of freedom)."""
    mean, n = float(np.mean(values)), len(values)
    variance = np.var(values, ddof=1) / n
    if variance == 0:  # every value the same: no chance left to count
        return Interval(mean, mean, mean, level, S, I, rule)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * np.sqrt(variance)
    return Interval(mean, float(mean - half), float(mean + half), level, S, I, rule)


def per_image_dice(run) -> dict:
    """A finished run's thresholded Dice on each test image, by image name."""
    values = run["final_metrics"].get("per_image_dice")
    if not values:
        raise ValueError(f"{run.get('folder', 'a run')}: its results.json has no per-image test Dice "
                         f"(made before they were recorded); make it again")
    return values


def contrast_matrix(arms: dict) -> np.ndarray:
    """The matrix ``D[s, i] = sum_k w_k Dice_k(s, i)`` of a contrast between configurations:
    ``arms = {name: (w_k, {seed: run})}``, e.g. ``{"a": (1, ...), "b": (-1, ...)}`` for a - b.
    Every configuration must have the same seeds and have been scored on the same test images;
    rows follow the seeds in order, columns the image names in order."""
    seeds = images = D = None
    for name, (weight, by_seed) in arms.items():
        if seeds is None:
            seeds = sorted(by_seed)
        elif sorted(by_seed) != seeds:
            raise ValueError(f"{name} has seeds {sorted(by_seed)}, the others {seeds}: a paired contrast needs the same")
        rows = []
        for seed in seeds:
            values = per_image_dice(by_seed[seed])
            if images is None:
                images = sorted(values)
            elif sorted(values) != images:
                raise ValueError(f"{name} (seed {seed}) was scored on other test images than the others")
            rows.append([values[image] for image in images])
        D = weight * np.array(rows) if D is None else D + weight * np.array(rows)
    return D
