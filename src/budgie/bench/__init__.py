"""Benchmark records: the runner writes them, the analyzer and comparer read them."""
