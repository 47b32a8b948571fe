"""The interval of a difference between configurations (report/stats.py), against SciPy's
paired t interval where it must reduce to it, and by its coverage where seeds and images
both vary."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from report.stats import contrast_matrix, difference_interval


def test_with_one_seed_it_is_scipys_paired_t_interval_over_images():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 0.8, 20), rng.uniform(0.5, 0.8, 20)
    ours = difference_interval((a - b)[None, :])
    reference = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert ours.mean == pytest.approx(np.mean(a - b))
    assert (ours.low, ours.high) == pytest.approx((reference.low, reference.high))


def test_with_one_image_it_is_the_t_interval_over_seeds():
    d = np.array([[0.03], [0.05], [-0.01]])
    reference = scipy_stats.ttest_1samp(d.ravel(), 0).confidence_interval(0.9)
    ours = difference_interval(d, level=0.9)
    assert (ours.low, ours.high) == pytest.approx((reference.low, reference.high))


def _coverage(interval, seed_sd, image_sd, cell_sd, n=600, seeds=3, images=20):
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(n):  # the true difference is 0
        D = (rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, image_sd, (1, images))
             + rng.normal(0, cell_sd, (seeds, images)))
        hits += interval(D).holds_zero
    return hits / n


@pytest.mark.parametrize("seed_sd, image_sd, cell_sd", [(0.05, 0.03, 0.03), (0.0, 0.03, 0.03), (0.05, 0.0, 0.03),
                                                         (0.02, 0.02, 0.1), (0.0, 0.0, 0.05)])
def test_the_interval_covers_the_true_difference_when_seeds_and_images_vary(seed_sd, image_sd, cell_sd):
    # near the nominal 95%: not below (too narrow), and not far above (wider than the data warrant)
    assert 0.91 <= _coverage(difference_interval, seed_sd, image_sd, cell_sd) <= 0.99


def test_treating_the_cells_as_independent_would_not_cover_a_seed_effect():
    """Why the model has a seed term: the plain paired t over all 60 (seed, image) cells, blind
    to a seed moving all its images together, misses the true difference most of the time."""
    def cells_as_independent(D):
        return difference_interval(D.reshape(1, -1))
    assert _coverage(cells_as_independent, 0.05, 0.01, 0.03) < 0.6
    assert _coverage(difference_interval, 0.05, 0.01, 0.03) >= 0.91


def test_a_contrast_pairs_images_by_name_and_seeds_by_number():
    def run(values):
        return {"final_metrics": {"per_image_dice": values}}
    a = {42: run({"02": 0.6, "01": 0.5}), 43: run({"01": 0.7, "02": 0.8})}
    b = {43: run({"02": 0.5, "01": 0.4}), 42: run({"01": 0.1, "02": 0.2})}
    D = contrast_matrix({"a": (1, a), "b": (-1, b)})
    assert D == pytest.approx(np.array([[0.4, 0.4], [0.3, 0.3]]))
    with pytest.raises(ValueError, match="seeds"):
        contrast_matrix({"a": (1, a), "b": (-1, {42: b[42]})})
    with pytest.raises(ValueError, match="other test images"):
        contrast_matrix({"a": (1, a), "b": (-1, {42: run({"01": 0.1}), 43: b[43]})})


def test_where_the_two_way_model_cannot_be_used_its_residual_term_is_dropped():
    """No seed or image effect beyond the residual (MS_seed + MS_image <= MS_residual): not the
    residual alone at (S-1)(I-1) degrees of freedom (a rule the report never stated), but the
    variance (MS_seed + MS_image) / (S I), which can only overstate the mean's, at Satterthwaite's
    degrees of freedom for those two terms, as the module and the report state."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        D = rng.normal(0, 0.05, (3, 20))
        m = D.mean()
        ms_seed, ms_image = 20 * ((D.mean(1) - m) ** 2).sum() / 2, 3 * ((D.mean(0) - m) ** 2).sum() / 19
        ms_res = ((D - D.mean(1)[:, None] - D.mean(0)[None, :] + m) ** 2).sum() / 38
        if ms_seed + ms_image > ms_res:  # the combined variance is positive: the model applies
            continue
        df = (ms_seed + ms_image) ** 2 / (ms_seed ** 2 / 2 + ms_image ** 2 / 19)
        half = scipy_stats.t.ppf(0.975, df) * np.sqrt((ms_seed + ms_image) / 60)
        ours = difference_interval(D)
        assert ours.rule == "upper bound" and 2 <= df and (ours.low, ours.high) == pytest.approx((m - half, m + half))
        break
    else:
        pytest.fail("no draw without a seed or image effect")


def test_the_two_way_interval_is_the_stated_formula():
    rng = np.random.default_rng(5)
    D = rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.05, (1, 20)) + rng.normal(0, 0.02, (3, 20))
    S, I, m = 3, 20, D.mean()
    ms_seed, ms_image = I * ((D.mean(1) - m) ** 2).sum() / 2, S * ((D.mean(0) - m) ** 2).sum() / 19
    ms_res = ((D - D.mean(1)[:, None] - D.mean(0)[None, :] + m) ** 2).sum() / 38
    combined = ms_seed + ms_image - ms_res
    df = combined ** 2 / (ms_seed ** 2 / 2 + ms_image ** 2 / 19 + ms_res ** 2 / 38)
    half = scipy_stats.t.ppf(0.975, df) * np.sqrt(combined / 60)
    ours = difference_interval(D)
    assert ours.rule == "two-way" and df >= 2
    assert (ours.low, ours.high) == pytest.approx((m - half, m + half))
