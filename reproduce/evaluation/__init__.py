"""Evaluation as the authors' ``evaluate_model.m``: datasets, preprocessing, embeddings, Recall@K.

``datasets`` reads the official layouts, ``preprocess`` and ``imresize`` reproduce the
MATLAB input pipeline, ``embeddings`` extracts and caches features, ``recall`` scores them and
``evaluate`` ties the steps together for ``fastap evaluate``.
"""
