"""debias-bench: a fairness benchmark for text-to-image diffusion models and debiasing methods."""

__version__ = "0.1.0"
