"""Small launchers run by *other* interpreters (FastChat's env): standard library only."""
