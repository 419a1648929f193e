"""Mutants of the cli guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

MUTANTS = {
}
