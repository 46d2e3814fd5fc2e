"""Benchmarks that print JSON figures measured in one run (`hf-pals bench adapters|trainer|tasks|serving`).

Speed and memory targets are checked here, never by timed unit tests: the figures and their ratios come
from the same process, the same model and the same batch, so machine noise affects them alike.
"""
