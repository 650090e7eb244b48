"""Modelling code for the jina-colbert-v2 stand-in (see `geometry_checks.standins`).

These two modules are copied, as they are, into a stand-in model directory and loaded
from there with `trust_remote_code=True`, the way the real model's custom code is. They
are written for this project: small, plain PyTorch, no flash-attention. They import
nothing from `geometry_checks`, so they also run as transformers' dynamic modules.
"""
