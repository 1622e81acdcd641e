"""Training building blocks: metrics against hand-computed values, losses, models, checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from train import checkpoint, losses, metrics
from train.errors import TrainError, WeightsError
from train.models import build_model, transfer


def test_average_precision_matches_the_definition():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    targets = np.array([[1], [0], [1], [0]])
    # Positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    assert metrics.average_precision(scores, targets)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(metrics.average_precision(scores, np.zeros_like(targets))[0])


def test_perfect_and_random_scores():
    rng = np.random.default_rng(0)
    targets = (rng.random((400, 20)) < 0.2).astype(np.int8)
    perfect = metrics.score(targets * 0.9 + 0.05, targets)
    assert perfect["mAP"] == pytest.approx(1.0)
    assert perfect["at_threshold_micro_f1"] == pytest.approx(1.0)
    noise = metrics.score(rng.random((400, 20)), targets)
    assert 0.1 < noise["mAP"] < 0.35          # about the prevalence, 0.2


def test_f1_micro_and_macro_by_hand():
    scores = np.array([[0.9, 0.1], [0.6, 0.8], [0.2, 0.3]])
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    m = metrics.f1_at(scores, targets, 0.5)
    # tag 0: tp 1, fp 1, fn 1 -> f1 0.5; tag 1: tp 1, fp 0, fn 1 -> f1 2/3.
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["micro_precision"] == pytest.approx(2 / 3) and m["micro_recall"] == 0.5


def test_per_tag_thresholds_fall_back_below_min_support():
    rng = np.random.default_rng(1)
    targets = np.zeros((200, 2), dtype=np.int8)
    targets[:100, 0] = 1
    targets[:2, 1] = 1
    scores = np.where(targets == 1, 0.3, 0.1) + rng.random((200, 2)) * 0.01
    th = metrics.best_thresholds(scores, targets, fallback=0.77, min_support=5)
    assert 0.1 < th[0] <= 0.3 and th[1] == 0.77


def test_slices_by_frequency_and_category():
    rng = np.random.default_rng(2)
    targets = (rng.random((300, 1200)) < 0.05).astype(np.int8)
    report = metrics.score(rng.random((300, 1200)), targets,
                              categories=np.array([0] * 1000 + [4] * 200),
                              counts=targets.sum(axis=0))
    assert set(report["slices"]) == {"top100", "top1000", "rest", "category_0", "category_4"}
    assert report["slices"]["top1000"]["tags"] == 1000
    assert report["slices"]["category_4"]["tags"] == 200


@pytest.mark.parametrize("name", ["bce", "focal", "asymmetric"])
def test_multilabel_losses_fall_when_logits_agree_with_targets(name):
    loss = losses.make_loss("multilabel", name)
    targets = (torch.rand(8, 30) < 0.2).float()
    good = loss(targets * 8 - 4, targets).item()
    bad = loss(4 - targets * 8, targets).item()
    assert 0 <= good < bad
    # Summed over tags: doubling the label space doubles the loss of the same mistakes.
    wide = loss(torch.cat([4 - targets * 8] * 2, 1), torch.cat([targets] * 2, 1)).item()
    assert wide == pytest.approx(2 * bad, rel=1e-4)


def test_multiclass_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    expected = -torch.log_softmax(logits, 1)[0, 0]
    assert losses.make_loss("multiclass")(logits, target) == pytest.approx(expected.item())


@pytest.mark.parametrize(("name", "width"), [("resnet18", 512), ("vgg16", 512 * 7 * 7)])
def test_models_build_by_name_with_a_multilabel_head(name, width):
    model = build_model(name, num_outputs=7, weights="none")
    x = torch.zeros(2, 3, 64, 64)
    assert model(x).shape == (2, 7)
    assert model.embed(x).shape == (2, width)         # what torchvision's classifier sees
    mlp = build_model(name, num_outputs=7, weights="none", head="mlp")
    assert mlp.eval()(x).shape == (2, 7)


def test_unknown_model_and_missing_weights_file_are_clear(tmp_path):
    with pytest.raises(TrainError, match="unknown model"):
        build_model("resnet9000", 3, weights="none")
    with pytest.raises(WeightsError, match="no such file"):
        build_model("resnet18", 3, weights=str(tmp_path / "nope.pth"))


def test_local_weights_file_loads_into_the_backbone(tmp_path):
    import torchvision
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model = build_model("resnet18", 3, weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.features[0].weight, source.conv1.weight)


def test_transfer_keeps_layers_that_fit_and_skips_a_new_head():
    a = build_model("resnet18", 5, weights="none")
    b = build_model("resnet18", 9, weights="none")
    loaded, skipped = transfer(b, a.state_dict())
    assert "head.1.weight" in skipped and "features.0.weight" in loaded
    assert torch.equal(a.features[0].weight, b.features[0].weight)


def test_checkpoint_round_trip_with_rng_states_and_weights_only(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    state = checkpoint.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    path = tmp_path / "ck" / "last.pt"
    checkpoint.save(path, {"step": 7, "rng": state, "w": torch.ones(3)})
    loaded = torch.load(path, weights_only=True)       # no arbitrary unpickling
    checkpoint.set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert loaded["step"] == 7 and not list(path.parent.glob(".*tmp"))


def _sklearn_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    from sklearn.metrics import average_precision_score
    return np.array([average_precision_score(targets[:, j], scores[:, j])
                     if targets[:, j].any() else np.nan for j in range(scores.shape[1])])


def test_tied_scores_give_sklearns_ap_whatever_the_row_order():
    scores = np.array([[0.5], [0.5], [0.5], [0.1]])
    for positive in range(3):
        targets = np.zeros((4, 1))
        targets[positive] = 1
        assert metrics.average_precision(scores, targets)[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("kind", ["tied", "bf16", "random"])
def test_average_precision_equals_sklearns(kind):
    rng = np.random.default_rng(7)
    targets = (rng.random((400, 30)) < rng.uniform(0.02, 0.5, 30)).astype(np.uint8)
    scores = rng.random((400, 30)) * 0.6 + targets * 0.4
    if kind == "tied":
        scores = np.round(scores, 1)
    elif kind == "bf16":
        scores = torch.tensor(scores, dtype=torch.float32).bfloat16().float().numpy()
    scores = scores.astype(np.float32)
    np.testing.assert_allclose(metrics.average_precision(scores, targets),
                               _sklearn_ap(scores, targets), rtol=1e-9, atol=1e-12)


def _scores(kind: str, n: int = 400, tags: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    targets = (rng.random((n, tags)) < rng.uniform(0.02, 0.5, tags)).astype(np.uint8)
    scores = rng.random((n, tags)) * 0.6 + targets * 0.4
    if kind == "tied":
        scores = np.round(scores, 1)
    elif kind == "bf16":
        scores = torch.tensor(scores, dtype=torch.float32).bfloat16().float().numpy()
    return scores.astype(np.float32), targets


@pytest.mark.parametrize("kind", ["tied", "bf16", "random"])
def test_counts_equal_direct_comparisons(kind):
    """The sorted-key counts are numpy's own `scores >= threshold`: a scalar in float32, an
    array (per-tag thresholds, the grid) in float64."""
    scores, targets = _scores(kind)
    truth = targets.astype(bool)
    per_tag = np.random.default_rng(3).choice([0.1, 0.2, 0.3, 0.7, 0.9], scores.shape[1])
    for threshold, compared in ((0.3, np.float32(0.3)), (0.7, np.float32(0.7)),
                                (per_tag, per_tag)):
        pred = scores >= compared
        tp, fp, fn = metrics.confusion(scores, targets, threshold)
        np.testing.assert_array_equal(tp, (pred & truth).sum(axis=0))
        np.testing.assert_array_equal(fp, (pred & ~truth).sum(axis=0))
        np.testing.assert_array_equal(fn, (~pred & truth).sum(axis=0))
    predicted, tp = metrics.grid_counts(scores, targets, metrics.F1_GRID)
    above = scores[None] >= metrics.F1_GRID[:, None, None]
    np.testing.assert_array_equal(predicted, above.sum(axis=1))
    np.testing.assert_array_equal(tp, (above & truth[None]).sum(axis=1))


@pytest.mark.parametrize("kind", ["tied", "bf16"])
def test_evaluate_in_one_pass_equals_the_separate_metrics(kind):
    scores, targets = _scores(kind, tags=60)
    report = metrics.score(scores, targets, threshold=0.4)
    pr = metrics.pr_equal_threshold(scores, targets)
    per_tag = metrics.best_thresholds(scores, targets, pr)
    assert report["pr_threshold"] == pr
    assert report["per_tag"]["threshold"] == per_tag.tolist()
    for prefix, threshold in (("at_threshold_", 0.4), ("at_pr_tuned_on_val_", pr),
                              ("per_tag_tuned_on_val_", per_tag)):
        for key, value in metrics.f1_at(scores, targets, threshold).items():
            assert report[prefix + key] == pytest.approx(value, abs=1e-12), prefix + key


@pytest.mark.parametrize("kind", ["tied", "bf16"])
def test_crossfitted_f1_chooses_on_one_half_and_scores_on_the_other(kind):
    # Thresholds chosen on the even rows score the odd rows and the other way round; the
    # confusion counts of the two halves are pooled (each half by numpy's own comparisons).
    scores, targets = _scores(kind, n=401, tags=60)
    report = metrics.score(scores, targets, threshold=0.4)
    halves = [(scores[0::2], targets[0::2]), (scores[1::2], targets[1::2])]
    for prefix, choose in (("at_pr_crossfit_", lambda s, t: metrics.pr_equal_threshold(s, t)),
                           ("per_tag_crossfit_", lambda s, t: metrics.best_thresholds(
                               s, t, metrics.pr_equal_threshold(s, t)))):
        pooled = np.zeros((3, scores.shape[1]))
        for (tune_s, tune_t), (held_s, held_t) in (halves, halves[::-1]):
            threshold = choose(tune_s, tune_t)
            pred = held_s >= (np.float32(threshold) if np.ndim(threshold) == 0 else threshold)
            truth = held_t.astype(bool)
            pooled += [(pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)]
        tp, fp, fn = pooled.sum(axis=1)
        f1 = 2 * tp / (2 * tp + fp + fn)
        per_tag = 2 * pooled[0] / (2 * pooled[0] + pooled[1] + pooled[2])
        has = (pooled[0] + pooled[2]) > 0
        assert report[prefix + "micro_f1"] == pytest.approx(f1, abs=1e-12)
        assert report[prefix + "micro_precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
        assert report[prefix + "macro_f1"] == pytest.approx(np.mean(per_tag[has]), abs=1e-12)


def test_on_pure_noise_crossfitted_f1_is_a_blind_guess_and_tuned_f1_overstates_it():
    # Scores that know nothing: no threshold can do better than the best blind guess, every
    # picture positive (F1 2p / (1 + p) for a tag of prevalence p), here from scikit-learn.
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    targets = rng.random((2000, 100)) < 0.02
    scores = rng.random((2000, 100), dtype=np.float32)
    report = metrics.score(scores, targets)
    everything = np.ones_like(targets)
    for average in ("micro", "macro"):
        blind = f1_score(targets, everything, average=average)
        crossfit = report[f"per_tag_crossfit_{average}_f1"]
        tuned = report[f"per_tag_tuned_on_val_{average}_f1"]
        assert blind * 0.9 < crossfit < blind * 1.02, (average, crossfit, blind)
        assert tuned > blind * 1.08 and tuned > crossfit * 1.1, (average, tuned, crossfit)


def test_nan_scores_are_refused_as_scikit_learn_refuses_them():
    from sklearn.metrics import average_precision_score
    scores, targets = _scores("random", n=40, tags=3)
    scores[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        average_precision_score(targets[:, 1], scores[:, 1])
    for call in (lambda: metrics.score(scores, targets),
                 lambda: metrics.average_precision(scores, targets),
                 lambda: metrics.f1_at(scores, targets, 0.4)):
        with pytest.raises(TrainError, match="1 of 120 scores are NaN"):
            call()


def test_evaluate_without_samples_reports_nothing_learned():
    report = metrics.score(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.uint8))
    assert report["samples"] == 0 and report["mAP"] == 0.0
    assert report["tags_with_positives"] == 0 and report["at_threshold_micro_f1"] == 0.0
