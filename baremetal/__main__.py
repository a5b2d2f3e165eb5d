"""`python -m baremetal` is the same as the `baremetal` command."""

from baremetal.cli import main

if __name__ == "__main__":
    main()
