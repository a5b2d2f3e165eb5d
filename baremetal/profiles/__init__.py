"""Starter stack files written by `baremetal init --profile NAME`."""
