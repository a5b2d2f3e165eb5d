"""A model's own chat template, read from its folder and rendered with Jinja2 the way transformers'
`apply_chat_template` does (sandboxed, trim_blocks/lstrip_blocks, `tojson`, `raise_exception`,
`strftime_now`, `{% generation %}`), so the gateway builds the same prompt vLLM would.

Where the template is found, first match wins: `chat_template.jinja`, `tokenizer_config.json`'s
`chat_template` (a string, or a list of named templates: `tool_use` when tools are sent, else
`default`), `chat_template.json`. Reading happens once per model (the gateway caches the result).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from baremetal.gateway.errors import bad_request


@dataclass(frozen=True)
class ModelTemplate:
    """What the gateway needs from a model folder to build prompts for it."""

    origin: str                                   # the file the template came from (for messages)
    default: str                                  # Jinja source
    tool_use: str | None = None                   # a separate template for requests with tools
    special_tokens: Mapping[str, str] = field(default_factory=dict)   # bos_token, eos_token, ...
    stop_token_ids: tuple[int, ...] = ()          # ids that end a turn (generation_config, eos_token)
    strip_bos: bool = False                       # the tokenizer adds BOS itself: drop a rendered one

    def source(self, with_tools: bool) -> str:
        return self.tool_use if with_tools and self.tool_use else self.default

    @property
    def hermes_tools(self) -> bool:
        """Whether the template renders tools itself in the Hermes/Qwen style the gateway parses."""
        text = self.tool_use or self.default
        return "tools" in text and "<tool_call>" in text


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def load_model_template(model_dir: Path) -> ModelTemplate | None:
    """The template of the model in `model_dir`, or None when the folder has none (or is not local)."""
    if not model_dir.is_dir():
        return None
    config = _read_json(model_dir / "tokenizer_config.json")
    default, tool_use, origin = _find_sources(model_dir, config)
    if default is None:
        return None
    special = {key: text for key, value in config.items()
               if key.endswith("_token") and (text := _token_text(value)) is not None}
    return ModelTemplate(origin=origin, default=default, tool_use=tool_use, special_tokens=special,
                         stop_token_ids=_stop_token_ids(model_dir, config, special.get("eos_token")),
                         strip_bos=bool(config.get("add_bos_token")) and bool(special.get("bos_token")))


def _find_sources(model_dir: Path, config: dict) -> tuple[str | None, str | None, str]:
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8"), None, str(jinja_file)
    template = config.get("chat_template")
    origin = str(model_dir / "tokenizer_config.json")
    if isinstance(template, str):
        return template, None, origin
    if isinstance(template, list):
        named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
        return named.get("default") or next(iter(named.values()), None), named.get("tool_use"), origin
    processor = _read_json(model_dir / "chat_template.json").get("chat_template")
    if isinstance(processor, str):
        return processor, None, str(model_dir / "chat_template.json")
    return None, None, origin


def _stop_token_ids(model_dir: Path, config: dict, eos_token: str | None) -> tuple[int, ...]:
    ids: list[int] = []
    eos = _read_json(model_dir / "generation_config.json").get("eos_token_id")
    ids += [eos] if isinstance(eos, int) else [i for i in eos or [] if isinstance(i, int)]
    if eos_token:
        decoder = config.get("added_tokens_decoder") or {}
        ids += [int(key) for key, value in decoder.items()
                if isinstance(value, dict) and value.get("content") == eos_token and key.isdigit()]
    return tuple(dict.fromkeys(ids))


class TemplateError(Exception):
    """raise_exception() in a template: the request does not fit the model's format."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment():
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for training; render its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols, GenerationTag])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return environment


class TemplateRenderer:
    """A model's templates, compiled once; `render` gives the prompt text."""

    def __init__(self, template: ModelTemplate, model_name: str):
        import jinja2

        self.template = template
        self.model_name = model_name
        environment = _environment()
        try:
            self._default = environment.from_string(template.default)
            self._tool_use = environment.from_string(template.tool_use) if template.tool_use else None
        except jinja2.TemplateError as error:
            raise bad_request(f"The chat template of model {model_name!r} ({template.origin}) does not "
                              f"compile: {error}.") from None

    def render(self, messages: list[dict], tools: list[dict] | None, extra: Mapping[str, Any] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The prompt for `messages` (and `tools`, passed to the template as transformers does)."""
        import jinja2

        compiled = self._tool_use if tools and self._tool_use else self._default
        variables = dict(self.template.special_tokens) | dict(extra or {})
        variables |= {"messages": messages, "tools": tools or None, "documents": None,
                      "add_generation_prompt": add_generation_prompt}
        try:
            text = compiled.render(**variables)
        except TemplateError as error:
            raise bad_request(f"Model {self.model_name!r} cannot take these messages: {error}",
                              param="messages") from None
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as error:
            raise bad_request(f"The chat template of model {self.model_name!r} failed on these messages: "
                              f"{type(error).__name__}: {error}", param="messages") from None
        bos = self.template.special_tokens.get("bos_token")
        if self.template.strip_bos and bos and text.startswith(bos):
            text = text[len(bos):]
        return text
