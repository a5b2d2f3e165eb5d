"""Where the templates are: conf.d.templates/ and systemd/ in a checkout, or their copies in the wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent     # baremetal/


def _find(checkout_name: str, packaged_name: str) -> Path:
    checkout = PACKAGE_DIR.parent / checkout_name
    if checkout.is_dir():
        return checkout
    return PACKAGE_DIR / "_templates" / packaged_name


def confd_templates_dir() -> Path:
    """The folder holding supervisord templates."""
    return _find("conf.d.templates", "confd")


def systemd_templates_dir() -> Path:
    """The folder holding systemd unit templates."""
    return _find("systemd", "systemd")
