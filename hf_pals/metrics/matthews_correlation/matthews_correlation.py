"""Matthews correlation metric, shipped inside hf_pals so that it loads without the Hugging Face Hub.

Same interface as the Hub's ``evaluate-metric/matthews_correlation`` module (single-label case),
computed with numpy instead of scikit-learn so the package does not need scikit-learn.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Compute the Matthews correlation coefficient (MCC), the metric of GLUE's CoLA task.

The MCC is a correlation coefficient between the observed and predicted classifications, in [-1, +1]:
+1 is a perfect prediction, 0 no better than random and -1 a total disagreement. It stays meaningful
when the classes are of very different sizes. For two classes,
MCC = (TP * TN - FP * FN) / sqrt((TP + FP) (TP + FN) (TN + FP) (TN + FN));
for more classes it is Gorodkin's R_K statistic of the confusion matrix C:
MCC = (c * s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2)),
with c = trace(C), s the number of samples, t_k the times class k truly occurred and p_k the times it
was predicted. When a denominator term is 0 (e.g. a single predicted class) the MCC is 0, as in
scikit-learn.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    sample_weight (`list` of `float`): Sample weights. Defaults to None.

Returns:
    matthews_correlation (`float`): Matthews correlation, in [-1, 1].

Examples:
    >>> matthews_metric = hf_pals.metrics.load_metric("matthews_correlation")
    >>> results = matthews_metric.compute(references=[1, 3, 2, 0, 3, 2], predictions=[1, 2, 2, 0, 3, 3])
    >>> print(round(results['matthews_correlation'], 2))
    0.54
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
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
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"
            ],
        )

    def _compute(self, predictions, references, sample_weight=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != references.shape:
            raise ValueError(f"sample_weight {weights.shape} does not match predictions {predictions.shape}")
        classes, index = np.unique(np.concatenate([references, predictions]), return_inverse=True)
        true_index, pred_index = index[: len(references)], index[len(references) :]
        confusion = np.zeros((len(classes), len(classes)))
        np.add.at(confusion, (true_index, pred_index), weights)
        t, p = confusion.sum(axis=1), confusion.sum(axis=0)
        c, s = np.trace(confusion), confusion.sum()
        denominator = (s * s - p @ p) * (s * s - t @ t)
        if denominator <= 0:
            return {"matthews_correlation": 0.0}
        return {"matthews_correlation": float((c * s - t @ p) / np.sqrt(denominator))}
