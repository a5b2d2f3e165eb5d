"""[[api.key]]: keys with a name, the models they may use and their limits (read and cross-checked here).

    [[api.key]]
    name = "team-a"                 # shown in metrics and logs; the key itself never is
    key = "env:TEAM_A_KEY"          # literal, env:VAR or file:PATH, as api_keys
    models = ["gpt-4", "bge-m3"]    # default: every model
    requests_per_minute = 600
    tokens_per_minute = 200000      # prompt + completion, as the engine reports them
    max_concurrent = 16
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from baremetal.config import types as t
from baremetal.config.fields import Problems, Table
from baremetal.config.model import ApiKey, Stack

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
UNNAMED = "-"          # the metrics' key label for api_keys entries and for a node without keys


def _key_name(value: Any) -> str:
    text = t.string(value)
    if not _NAME.match(text):
        raise t.FieldError(f"{text!r}: a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                           "or digit (it becomes a metrics label)")
    return text


def read_named_keys(raw: Any, problems: Problems, key_spec_problem) -> tuple[ApiKey, ...]:
    """The [[api.key]] tables, each field checked; problems recorded with their paths (api.key[N].field)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add("api.key", f"expected an array of tables: write each key as [[api.key]], got {t.type_name(raw)}")
        return ()
    entries, seen = [], {}
    for index, item in enumerate(raw):
        path = f"api.key[{index}]"
        table = Table(item, path, problems)
        limit = t.integer(1, 10**12)
        entry = ApiKey(name=table.take("name", _key_name, f"key-{index}", required=True),
                       key=table.take("key", t.string, "", required=True),
                       models=table.take("models", t.nonempty_string_list, None),
                       requests_per_minute=table.take("requests_per_minute", limit, None),
                       tokens_per_minute=table.take("tokens_per_minute", limit, None),
                       max_concurrent=table.take("max_concurrent", t.integer(1, 100000), None))
        table.finish()
        if table.has("key"):
            problem = key_spec_problem(entry.key)
            if problem:
                problems.add(f"{path}.key", problem)
        if entry.name in seen:
            problems.add(f"{path}.name", f"{entry.name!r} is also the name of api.key[{seen[entry.name]}]; "
                         "each key needs its own name")
        seen.setdefault(entry.name, index)
        entries.append(entry)
    return tuple(entries)


def check_named_keys(stack: Stack, problems: Problems) -> None:
    """Cross-field checks: the gateway reads them, models exist, no literal key given twice."""
    api = stack.api
    if not api.named_keys:
        return
    if api.kind != "gateway":
        problems.add("api.key", f"[[api.key]] needs api.kind = \"gateway\" (names, model lists and limits are the "
                     f"gateway's); FastChat's server (kind {api.kind!r}) takes only api_keys")
    served = {model.name for model in stack.models} | {p.serves.model for p in stack.programs if p.serves}
    for index, entry in enumerate(api.named_keys):
        for position, model in enumerate(entry.models or ()):
            if model in served:
                continue
            close = difflib.get_close_matches(model, sorted(served), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; models here: {', '.join(sorted(served)) or 'none'}"
            message = f"{model!r} is not a model of this stack{hint}"
            if stack.controller.enabled:        # a worker may register it with the controller
                problems.warn(f"api.key[{index}].models[{position}]", message + " (fine if a FastChat worker "
                              "registers it with the controller)")
            else:
                problems.add(f"api.key[{index}].models[{position}]", message)
    literals: dict[str, str] = {spec: "api.api_keys" for spec in api.api_keys if not spec.startswith(("env:", "file:"))}
    for index, entry in enumerate(api.named_keys):
        if entry.key.startswith(("env:", "file:")) or not entry.key:
            continue
        if entry.key in literals:
            problems.add(f"api.key[{index}].key", f"the same key is also given in {literals[entry.key]}: one key, "
                         "one name (else its requests could not be told apart)")
        literals.setdefault(entry.key, f"api.key[{index}]")
