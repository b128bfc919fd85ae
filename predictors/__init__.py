"""Tollgate complexity predictors: embeddings + scikit-learn models, training and evaluation.

Pure: no gateway imports. May read files and datasets.
"""
