"""Argument builders, one module per engine: small functions, and the user's own flags win."""
