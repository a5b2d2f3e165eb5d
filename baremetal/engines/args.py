"""Merging generated flags with the user's `args`: a flag the user gives replaces the generated one."""

from __future__ import annotations

# Short and long spellings of one option, normalised to the long name without dashes.
ALIASES = {
    "tp": "tensor-parallel-size",
    "pp": "pipeline-parallel-size",
    "dp": "data-parallel-size",
    "device-memory-utilization": "gpu-memory-utilization",
    "model-tag": "model",
}


def flag_key(argument: str) -> str | None:
    """The option an argument sets (`--no-enable-x=1` -> `enable-x`), or None for a plain value."""
    if not argument.startswith("-") or argument in ("-", "--") or _is_number(argument):
        return None
    name = argument.lstrip("-").split("=", 1)[0]
    name = ALIASES.get(name, name)
    if name.startswith("no-"):
        name = name[3:]
    if name.startswith("disable-"):        # --disable-x and --enable-x set the same switch
        name = "enable-" + name[len("disable-"):]
    return name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def group_flags(argv: list[str] | tuple[str, ...]) -> list[list[str]]:
    """Split a flag list into [flag, value...] groups (a value is any argument that is not a flag)."""
    groups: list[list[str]] = []
    for argument in argv:
        if flag_key(argument) is not None or not groups:
            groups.append([argument])
        else:
            groups[-1].append(argument)
    return groups


def merge_args(generated: list[str], user: tuple[str, ...] | list[str]) -> list[str]:
    """`generated` minus every option that `user` sets, then `user` verbatim."""
    overridden = {flag_key(argument) for argument in user} - {None}
    kept = [group for group in group_flags(generated) if flag_key(group[0]) not in overridden]
    return [argument for group in kept for argument in group] + list(user)
