"""F1 metric, shipped inside hf_pals so that it loads without the Hugging Face Hub.

Same interface as the Hub's ``evaluate-metric/f1`` module (single-label case), computed with numpy
instead of scikit-learn so the package does not need scikit-learn. One difference: ``average`` defaults
to None, which picks "binary" when every label is 0 or 1 and "macro" otherwise (the Hub's module always
defaults to "binary", which scikit-learn refuses for more than two classes).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
The F1 score is the harmonic mean of the precision and recall. It can be computed with the equation:
F1 = 2 * (precision * recall) / (precision + recall) = 2 * TP / (2 * TP + FP + FN).
A class with 2 * TP + FP + FN = 0 (never predicted, never true) has F1 0, as in scikit-learn.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    labels (`list` of `int`): The labels to average over when `average` is not "binary". Defaults to the
        sorted labels present in `predictions` and `references`.
    pos_label (`int`): The class to report when `average="binary"`. Defaults to 1.
    average (`string`): How to combine the classes' F1 scores. Defaults to None, which means "binary"
        when every label is 0 or 1 and "macro" otherwise.
        - 'binary': the F1 of class `pos_label` only (a binary task's positive class).
        - 'micro': F1 of the total true positives, false negatives and false positives.
        - 'macro': the unweighted mean of each label's F1.
        - 'weighted': the mean of each label's F1 weighted by its support (true instances).
    sample_weight (`list` of `float`): Sample weights. Defaults to None.

Returns:
    f1 (`float`): F1 score, in [0, 1].

Examples:
    >>> f1_metric = hf_pals.metrics.load_metric("f1")
    >>> f1_metric.compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0])
    {'f1': 0.5}
    >>> results = f1_metric.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 2, 1, 0, 0, 1])
    >>> print(round(results['f1'], 2))  # macro, since there are three classes
    0.27
"""

_CITATION = r"""
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V.
         and Thirion, B. and Grisel, O. and Blondel, M. and Prettenhofer, P.
         and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
         Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

AVERAGES = ("binary", "micro", "macro", "weighted")


def _f1(tp, fp, fn):
    """2TP / (2TP + FP + FN), elementwise, 0 where the denominator is 0."""
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=np.float64), where=denominator > 0)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average=None, sample_weight=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != references.shape:
            raise ValueError(f"sample_weight {weights.shape} does not match predictions {predictions.shape}")
        present = np.union1d(predictions, references)
        if average is None:
            average = "binary" if set(present.tolist()) <= {0, 1} else "macro"
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {list(AVERAGES)} (or None for binary/macro by labels), got {average!r}")
        if average == "binary":
            if len(present) > 2:
                raise ValueError(
                    f"average='binary' needs at most two classes, got labels {present.tolist()}; "
                    "pass average='macro', 'micro' or 'weighted'"
                )
            classes = np.asarray([pos_label])
        else:
            classes = present if labels is None else np.asarray(labels)
        is_pred = predictions[None, :] == classes[:, None]
        is_true = references[None, :] == classes[:, None]
        tp = np.sum(weights * (is_pred & is_true), axis=1)
        fp = np.sum(weights * (is_pred & ~is_true), axis=1)
        fn = np.sum(weights * (~is_pred & is_true), axis=1)
        if average == "micro":
            return {"f1": float(_f1(tp.sum(), fp.sum(), fn.sum()))}
        scores = _f1(tp, fp, fn)
        if average == "weighted":
            support = tp + fn
            return {"f1": float(np.sum(scores * support) / support.sum()) if support.sum() > 0 else 0.0}
        return {"f1": float(np.mean(scores)) if scores.size else 0.0}
