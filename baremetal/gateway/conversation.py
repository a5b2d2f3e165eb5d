"""FastChat's conversation templates, rendered from the JSON a worker serves at /worker_get_conv_template.

The fallback prompt format for FastChat workers whose model folder has no chat template. Mirrors
`Conversation.get_prompt` of fschat 0.2.36 (the last release); the separator style arrives as an integer
whose numbering is that release's (later FastChat sources insert styles and shift the numbers, which
is why the model's own chat template is always preferred). Pure; tests compare it with FastChat itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from baremetal.gateway.errors import bad_gateway, bad_request

# fschat 0.2.36 SeparatorStyle values
(ADD_COLON_SINGLE, ADD_COLON_TWO, ADD_COLON_SPACE_SINGLE, NO_COLON_SINGLE, NO_COLON_TWO, ADD_NEW_LINE_SINGLE,
 LLAMA2, CHATGLM, CHATML, CHATINTERN, DOLLY, RWKV, PHOENIX, ROBIN, FALCON_CHAT, CHATGLM3, DEEPSEEK_CHAT,
 METAMATH, YUAN2) = range(1, 20)


@dataclass(frozen=True)
class Conversation:
    """A worker's template, as served; `messages` holds its few-shot turns (role name, text)."""

    name: str
    system_template: str
    system_message: str
    roles: tuple[str, str]
    messages: tuple[tuple[str, str | None], ...]
    sep_style: int
    sep: str
    sep2: str | None
    stop_str: str | tuple[str, ...] | None
    stop_token_ids: tuple[int, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Conversation":
        """From the worker's `conv` object; a 502 when it does not look like one."""
        try:
            stop = data.get("stop_str")
            return cls(name=str(data.get("name", "")), system_template=data.get("system_template", "{system_message}"),
                       system_message=data.get("system_message") or "", roles=tuple(data["roles"])[:2],
                       messages=tuple((role, text) for role, text in data.get("messages") or ()),
                       sep_style=int(data["sep_style"]), sep=data.get("sep", "\n"), sep2=data.get("sep2"),
                       stop_str=tuple(stop) if isinstance(stop, list) else stop,
                       stop_token_ids=tuple(data.get("stop_token_ids") or ()))
        except (KeyError, TypeError, ValueError) as error:
            raise bad_gateway(f"the worker sent a conversation template the gateway cannot read ({error})") from None

    def with_turns(self, system: str | None, turns: list[tuple[int, str | None]]) -> "Conversation":
        """The template plus `turns` (role 0 = user, 1 = assistant, None = the open assistant turn)."""
        messages = self.messages + tuple((self.roles[role], text) for role, text in turns)
        return Conversation(self.name, self.system_template,
                            self.system_message if system is None else system, self.roles, messages,
                            self.sep_style, self.sep, self.sep2, self.stop_str, self.stop_token_ids)

    def prompt(self) -> str:
        """The prompt text, as FastChat 0.2.36's get_prompt builds it."""
        render = _STYLES.get(self.sep_style)
        if render is None:
            raise bad_request(f"FastChat conversation template {self.name!r} uses separator style "
                              f"{self.sep_style}, which the gateway does not know; give the model a chat "
                              "template (tokenizer_config.json) or use api.kind = \"fastchat\".")
        return render(self, self.system_template.format(system_message=self.system_message))


def _colon(separator: str, seps: Callable[["Conversation", int], str], empty: str = ":"):
    def render(conv: Conversation, system: str) -> str:
        out = system + separator(conv)
        for index, (role, message) in enumerate(conv.messages):
            out += f"{role}: {message}{seps(conv, index)}" if message else role + empty
        return out
    return render


def _no_colon(seps: Callable[["Conversation", int], str]):
    def render(conv: Conversation, system: str) -> str:
        out = system
        for index, (role, message) in enumerate(conv.messages):
            out += role + message + seps(conv, index) if message else role
        return out
    return render


def _one(conv: Conversation, index: int) -> str:
    return conv.sep


def _two(conv: Conversation, index: int) -> str:
    return (conv.sep, conv.sep2)[index % 2]


def _new_line_single(conv: Conversation, system: str) -> str:
    out = "" if system == "" else system + conv.sep
    for role, message in conv.messages:
        out += f"{role}\n{message}{conv.sep}" if message else f"{role}\n"
    return out


def _llama2(conv: Conversation, system: str) -> str:
    out = system if conv.system_message else "[INST] "
    for index, (_, message) in enumerate(conv.messages):
        tag = conv.roles[index % 2]
        if message:
            out += message + " " if index == 0 else f"{tag} {message}{_two(conv, index)}"
        else:
            out += tag
    return out


def _chatglm(conv: Conversation, system: str) -> str:
    round_add = 1 if conv.name == "chatglm2" else 0
    out = system + conv.sep if system else ""
    for index, (role, message) in enumerate(conv.messages):
        if index % 2 == 0:
            out += f"[Round {index // 2 + round_add}]{conv.sep}"
        out += f"{role}：{message}{conv.sep}" if message else f"{role}："
    return out


def _chatml(conv: Conversation, system: str) -> str:
    out = "" if system == "" else system + conv.sep + "\n"
    for role, message in conv.messages:
        out += f"{role}\n{message}{conv.sep}\n" if message else f"{role}\n"
    return out


def _chatglm3(conv: Conversation, system: str) -> str:
    out = system if conv.system_message else ""
    for role, message in conv.messages:
        out += f"{role}\n{message}" if message else role
    return out


def _chatintern(conv: Conversation, system: str) -> str:
    out = system
    for index, (role, message) in enumerate(conv.messages):
        out += "<s>" if index % 2 == 0 else ""
        out += f"{role}:{message}{_two(conv, index)}\n" if message else f"{role}:"
    return out


def _dolly(conv: Conversation, system: str) -> str:
    out = system
    for index, (role, message) in enumerate(conv.messages):
        if message:
            out += f"{role}:\n{message}{_two(conv, index)}" + ("\n\n" if index % 2 == 1 else "")
        else:
            out += f"{role}:\n"
    return out


def _rwkv(conv: Conversation, system: str) -> str:
    out = system
    for role, message in conv.messages:
        out += f"{role}: " + message.replace("\r\n", "\n").replace("\n\n", "\n") + "\n\n" if message else f"{role}:"
    return out


def _phoenix(conv: Conversation, system: str) -> str:
    out = system
    for role, message in conv.messages:
        out += f"{role}: <s>{message}</s>" if message else f"{role}: <s>"
    return out


def _robin(conv: Conversation, system: str) -> str:
    out = system + conv.sep
    for role, message in conv.messages:
        out += f"{role}:\n{message}{conv.sep}" if message else f"{role}:\n"
    return out


def _falcon_chat(conv: Conversation, system: str) -> str:
    out = system + conv.sep if conv.system_message else ""
    for role, message in conv.messages:
        out += f"{role}: {message}{conv.sep}" if message else f"{role}:"
    return out


def _metamath(conv: Conversation, system: str) -> str:
    out = "" if system == "" else system + conv.sep
    for index, (role, message) in enumerate(conv.messages):
        starting = ":\n" if index % 2 == 0 else ": " + (conv.sep2 or "")
        out += role + starting + (message + (conv.sep if index % 2 == 0 else "") if message else "")
    return out


def _yuan2(conv: Conversation, system: str) -> str:
    out = system + (conv.sep2 or "") if conv.system_message else ""
    for _, message in conv.messages:
        out += message + "<n>" if message else ""
    # FastChat strips any trailing '<', 'n', '>' characters (str.rstrip with a character set)
    return out.rstrip("<n>") + conv.sep


_STYLES: dict[int, Callable[[Conversation, str], str]] = {
    ADD_COLON_SINGLE: _colon(lambda conv: conv.sep, _one),
    ADD_COLON_TWO: _colon(lambda conv: conv.sep, _two),
    ADD_COLON_SPACE_SINGLE: _colon(lambda conv: conv.sep, _one, empty=": "),
    NO_COLON_SINGLE: _no_colon(_one),
    NO_COLON_TWO: _no_colon(_two),
    ADD_NEW_LINE_SINGLE: _new_line_single,
    LLAMA2: _llama2,
    CHATGLM: _chatglm,
    CHATML: _chatml,
    CHATINTERN: _chatintern,
    DOLLY: _dolly,
    RWKV: _rwkv,
    PHOENIX: _phoenix,
    ROBIN: _robin,
    FALCON_CHAT: _falcon_chat,
    CHATGLM3: _chatglm3,
    DEEPSEEK_CHAT: _colon(lambda conv: "", _two),
    METAMATH: _metamath,
    YUAN2: _yuan2,
}
