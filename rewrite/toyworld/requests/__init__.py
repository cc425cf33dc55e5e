"""Toy edit requests built from the world's rules, and the scorer against their exactly known results."""
