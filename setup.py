"""Packages for setuptools: every package under baremetal/, found (a hand-kept list would silently leave a
new one out of the wheel), plus the templates that live at the top of the checkout (conf.d.templates/,
systemd/), which the wheel carries as baremetal._templates.*. Everything else is in setup.cfg."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["baremetal", "baremetal.*"])
      + ["baremetal._templates.confd", "baremetal._templates.systemd"])
