"""Datasets superlora trains and evaluates on."""
