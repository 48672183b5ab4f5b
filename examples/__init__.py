"""Builds the example model repository locally from a dataset scikit-learn ships."""
