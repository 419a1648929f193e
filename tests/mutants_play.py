"""Mutants of the play guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

MUTANTS = {
}
