"""Mutants of the distributed guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

MUTANTS = {
}
