"""The stack file: its model (frozen dataclasses), value types, and the one reader."""

from baremetal.config.load import load_stack, parse_stack
from baremetal.config.model import Stack

__all__ = ["Stack", "load_stack", "parse_stack"]
