"""The example analysis: one dimuon histogram, defined once, computed by several engines.

:mod:`.dimuon` holds the definition (selection, formula, binning) that the uproot/awkward and the
ROOT RDataFrame variants share, so "both give the same histogram" is a statement about engines,
not about two copies of a selection. :mod:`.files` names the dataset's files.
"""
