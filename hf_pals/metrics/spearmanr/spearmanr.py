"""Spearman correlation metric, shipped inside hf_pals so that it loads without the Hugging Face Hub.

Same interface as the Hub's ``evaluate-metric/spearmanr`` module, computed with ``scipy.stats.spearmanr``.
"""

import datasets
import evaluate
from scipy.stats import spearmanr

_DESCRIPTION = """
The Spearman rank-order correlation coefficient measures the monotonic relationship between two
datasets: the Pearson correlation of their ranks (tied values share the mean of their ranks). It varies
between -1 and +1, with 0 implying no correlation; +1 (-1) means an exact monotonically increasing
(decreasing) relationship. Unlike the Pearson correlation it does not assume a linear relationship.
The p-value roughly indicates the probability of an uncorrelated system producing datasets with a
Spearman correlation at least as extreme as the one computed from these datasets.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted values.
    references (`list` of `float`): Ground truth values.
    return_pvalue (`boolean`): If True, also return the p-value. Defaults to False.

Returns:
    spearmanr (`float`): Spearman correlation coefficient, in [-1, 1] (nan for constant inputs).
    spearmanr_pvalue (`float`): P-value, in [0, 1]; only returned when `return_pvalue=True`.

Examples:
    >>> spearmanr_metric = hf_pals.metrics.load_metric("spearmanr")
    >>> results = spearmanr_metric.compute(references=[1, 2, 3, 4, 5], predictions=[10, 9, 2.5, 6, 4])
    >>> print(results)
    {'spearmanr': -0.7}
"""

_CITATION = r"""
@article{2020SciPy-NMeth,
  author  = {Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and
             Haberland, Matt and Reddy, Tyler and Cournapeau, David and
             Burovski, Evgeni and Peterson, Pearu and Weckesser, Warren and
             Bright, Jonathan and {van der Walt}, St{\'e}fan J. and
             Brett, Matthew and Wilson, Joshua and Millman, K. Jarrod and
             Mayorov, Nikolay and Nelson, Andrew R. J. and Jones, Eric and
             Kern, Robert and Larson, Eric and Carey, C J and
             Polat, {\.I}lhan and Feng, Yu and Moore, Eric W. and
             {VanderPlas}, Jake and Laxalde, Denis and Perktold, Josef and
             Cimrman, Robert and Henriksen, Ian and Quintero, E. A. and
             Harris, Charles R. and Archibald, Anne M. and
             Ribeiro, Ant{\^o}nio H. and Pedregosa, Fabian and
             {van Mulbregt}, Paul and {SciPy 1.0 Contributors}},
  title   = {{{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python}},
  journal = {Nature Methods},
  year    = {2020},
  volume  = {17},
  pages   = {261--272},
  doi     = {10.1038/s41592-019-0686-2},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("float64"),
                }
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = spearmanr(references, predictions)
        if return_pvalue:
            return {"spearmanr": float(result[0]), "spearmanr_pvalue": float(result[1])}
        return {"spearmanr": float(result[0])}
