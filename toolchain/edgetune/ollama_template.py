"""Translate a model's Jinja chat template to an Ollama TEMPLATE (Go text/template), and prove the translation.

Ollama does not run Jinja: without a TEMPLATE it guesses one of its own from the GGUF's template, and for a template
it does not know the model gets prompts it never saw in training ("good in transformers, gibberish in Ollama").
The translation covers the turn-per-message families edgetune trains with (ChatML, the built-in fallback, and the
same shape with other markers, e.g. Llama 3's headers): every message is PREFIX[role] + content + SUFFIX[role], an
optional default system turn comes first when the conversation has none, and a generation prompt opens the
assistant's turn. The markers are read off the Jinja template by rendering it on sentinel conversations, the Go
template is built from them, and then both are rendered on test conversations (system prompt or not, multi-turn,
generation prompt, a final assistant message continued as Ollama does) and must give the same text. Anything else
is refused with the reason (`Untranslatable`), never approximated. Jinja renders through transformers (the
renderer the model was trained with); the Go side through `gotemplate`, a faithful subset renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgetune import gotemplate

ROLES = ("system", "user", "assistant")
_S, _U1, _A1, _U2 = "Sys9q7Z", "Usr9q7A", "Ast9q7B", "Usr9q7C"  # sentinels no template strips or splits

# The conversations both renderings must agree on: plain, with a system prompt, multi-turn, a final assistant
# message (continued, Ollama's prefill), and contents with newlines, braces, quotes and non-ASCII text.
CONVERSATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("user", "Hello!"),),
    (("system", "You answer in French."), ("user", "What is 2+2?")),
    (("user", "Review: a charming film."), ("assistant", "positive"), ("user", "Review: dull and long.")),
    (("system", "Be brief.\nOne word."), ("user", "Sky colour?"), ("assistant", "blue"),
     ("user", "And grass? {{ .Content }} \"quoted\""), ("assistant", "gr")),
    (("user", "  spaces and tabs\t, émoji ☀ and 中文  "),),
    (("user", "Hi"), ("assistant", "Hello."), ("system", "From now on, be terse."), ("user", "Why?")),
)


class Untranslatable(ValueError):
    """The template is outside the families edgetune translates, or its translation renders differently."""


@dataclass(frozen=True)
class Translation:
    go_template: str
    bos_auto: str  # the BOS text the runtime adds itself (add_bos_token), stripped from the template's start


def jinja_render(template: str, messages: Sequence[tuple[str, str]], *, bos_token: str = "", eos_token: str = "",
                 generation_prompt: bool, continue_final: bool = False) -> str:
    """The Jinja template rendered as transformers' apply_chat_template renders it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    conv = [{"role": r, "content": c} for r, c in messages]
    # returns (rendered conversations, generation indices)
    out: Any = render_jinja_template([conv], chat_template=template, add_generation_prompt=generation_prompt,
                                     continue_final_message=continue_final, bos_token=bos_token, eos_token=eos_token)
    return str(out[0][0])


def go_render(go_template: str, messages: Sequence[tuple[str, str]]) -> str:
    """The TEMPLATE as Ollama executes it for /api/chat: `.Messages` holds the conversation."""
    return gotemplate.render(go_template, {"Messages": [{"Role": r, "Content": c} for r, c in messages],
                                           "System": "", "Prompt": "", "Response": ""})


def _between(text: str, start: str, end: str) -> str:
    i, j = text.index(start) + len(start), text.index(end)
    if j < i:
        raise Untranslatable("the template reorders messages")
    return text[i:j]


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise Untranslatable(f"the template does not mark {what} the same way in every turn")
    return text[: len(text) - len(suffix)]


def translate(template: str, *, bos_token: str = "", eos_token: str = "", add_bos: bool = False) -> Translation:
    """The Go TEMPLATE equivalent to `template`, checked on CONVERSATIONS. Raises Untranslatable with the reason."""
    from jinja2 import TemplateError

    def render(msgs: Sequence[tuple[str, str]], gen: bool = False) -> str:
        try:
            return jinja_render(template, msgs, bos_token=bos_token, eos_token=eos_token, generation_prompt=gen)
        except (TemplateError, TypeError, KeyError, AttributeError, IndexError) as exc:  # raise_exception too
            raise Untranslatable(f"the Jinja template fails on a {'/'.join(r for r, _ in msgs)} conversation: "
                                 f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from exc

    try:
        user = render([("user", _U1)])
        gen = render([("user", _U1)], gen=True)
        user_ast = render([("user", _U1), ("assistant", _A1)])
        multi = render([("user", _U1), ("assistant", _A1), ("user", _U2)])
        system = render([("system", _S), ("user", _U1)])
    except ValueError as exc:  # .index: a sentinel the template dropped
        raise Untranslatable(f"the template drops message contents: {exc}") from exc
    if not all(s in r for s, r in ((_U1, user), (_A1, user_ast), (_U2, multi), (_S, system))):
        raise Untranslatable("the template drops or rewrites message contents")
    if not gen.startswith(user):
        raise Untranslatable("the generation prompt changes earlier text instead of following it")
    gen_prompt = gen[len(user):]
    user_suffix = user[user.index(_U1) + len(_U1):]
    ast_suffix = user_ast[user_ast.index(_A1) + len(_A1):]
    if not _between(user_ast, _U1, _A1).startswith(user_suffix):
        raise Untranslatable("the user turn ends differently before an assistant turn")
    ast_prefix = _between(user_ast, _U1, _A1)[len(user_suffix):]
    between = _between(multi, _A1, _U2)
    if not between.startswith(ast_suffix):
        raise Untranslatable("the assistant turn ends differently before a user turn")
    user_prefix = between[len(ast_suffix):]
    head = _strip_suffix(user[: user.index(_U1)], user_prefix, "the user turn")  # BOS + default system turn
    sys_head = system[: system.index(_S)]  # BOS + system prefix
    sys_suffix = _strip_suffix(_between(system, _S, _U1), user_prefix, "the user turn after a system turn")
    # text before the first turn: a BOS the template writes itself (a runtime with add_bos_token adds it instead)
    # (ChatML models often call <|im_start|> their BOS: then it is a turn marker, not a start of text)
    start = bos_token if bos_token and head.startswith(bos_token) and sys_head.startswith(bos_token) \
        and not user_prefix.startswith(bos_token) else ""
    bos = start if add_bos else ""
    sys_prefix, default_system = sys_head[len(start):], head[len(start):]
    go = _go_template(start[len(bos):], default_system, sys_prefix, sys_suffix, user_prefix, user_suffix,
                      ast_prefix, ast_suffix, gen_prompt)
    _check(template, go, bos, bos_token=bos_token, eos_token=eos_token)
    return Translation(go_template=go, bos_auto=bos)


def _literal(text: str) -> str:
    """Template text as a Go literal action where it could be read as template syntax, else as it is."""
    if "{{" in text or "}}" in text:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return '{{ "' + escaped + '" }}'
    return text


def _go_template(start: str, default_system: str, sys_p: str, sys_s: str, usr_p: str, usr_s: str, ast_p: str,
                 ast_s: str, gen: str) -> str:
    """One line of actions with literal markers between them: no trim markers, so no marker whitespace is lost.
    A final assistant message stays open (Ollama continues it); other roles (tool) are not rendered."""
    lit = _literal
    first = lit(start) + (f'{{{{ if ne .Role "system" }}}}{lit(default_system)}{{{{ end }}}}' if default_system else "")
    parts = [
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}",
        f"{{{{ if eq $i 0 }}}}{first}{{{{ end }}}}" if first else "",
        f'{{{{ if eq .Role "system" }}}}{lit(sys_p)}{{{{ .Content }}}}{lit(sys_s)}',
        f'{{{{ else if eq .Role "user" }}}}{lit(usr_p)}{{{{ .Content }}}}{lit(usr_s)}',
        f'{{{{ else if eq .Role "assistant" }}}}{lit(ast_p)}{{{{ .Content }}}}'
        f"{{{{ if not $last }}}}{lit(ast_s)}{{{{ end }}}}{{{{ end }}}}",
        f'{{{{ if and $last (ne .Role "assistant") }}}}{lit(gen)}{{{{ end }}}}{{{{ end }}}}',
    ]
    return "".join(parts)


def _check(template: str, go: str, bos: str, *, bos_token: str, eos_token: str) -> None:
    from jinja2 import TemplateError

    for n, conv in enumerate(CONVERSATIONS):
        final_assistant = conv[-1][0] == "assistant"
        try:
            want = jinja_render(template, conv, bos_token=bos_token, eos_token=eos_token,
                                generation_prompt=not final_assistant, continue_final=final_assistant)
        except TemplateError as exc:
            if any(role == "system" for role, _ in conv[1:]):
                continue  # the template itself refuses a system turn mid-way: there is no text to match
            raise Untranslatable(f"the Jinja template fails on test conversation {n}: {exc}") from exc
        got = bos + go_render(go, conv)
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise Untranslatable(f"the translation renders test conversation {n} differently at character {at}: "
                                 f"Jinja {want[at:at + 24]!r}, Go {got[at:at + 24]!r}")
