"""The Jinja → Ollama TEMPLATE translation and the Go text/template renderer that checks it.

Templates are real ones (SmolLM2's own, edgetune's ChatML fallback, Llama 3's turn format) rendered by
transformers' Jinja renderer; the Go side by edgetune.gotemplate. Templates outside the translated families are
refused with a reason, never approximated."""

from __future__ import annotations

import pytest

from edgetune import chat_templates, gotemplate
from edgetune.ollama_template import CONVERSATIONS, Untranslatable, go_render, jinja_render, translate

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
           "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
          "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] "
         "+ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
# renames the assistant "model" (Gemma's way): the markers are read per role, so this translates
RENAMES = chat_templates.CHATML.replace("message['role']", "('model' if message['role'] == 'assistant' else "
                                        "message['role'])")
# trims contents, numbers the turns: the translation's text differs, so both are refused
TRIMS = LLAMA3.replace("message['content']", "message['content'] | trim")
NUMBERS = chat_templates.CHATML.replace("message['role'] + '\\n'", "message['role'] + ' ' + loop.index|string + '\\n'")


@pytest.mark.parametrize("template,bos,add_bos", [(SMOLLM2, "<|im_start|>", False),
                                                  (chat_templates.CHATML, "<|endoftext|>", False),
                                                  (RENAMES, "<|endoftext|>", False),
                                                  (LLAMA3, "<|begin_of_text|>", True),
                                                  (LLAMA3, "<|begin_of_text|>", False)])
def test_translation_renders_every_test_conversation_like_jinja(template, bos, add_bos):
    done = translate(template, bos_token=bos, add_bos=add_bos)
    assert done.bos_auto == (bos if add_bos and template is LLAMA3 else "")
    for conv in CONVERSATIONS:
        final_assistant = conv[-1][0] == "assistant"
        want = jinja_render(template, conv, bos_token=bos, generation_prompt=not final_assistant,
                            continue_final=final_assistant)
        assert done.bos_auto + go_render(done.go_template, conv) == want


def test_smollm2_default_system_prompt_only_without_a_system_message():
    go = translate(SMOLLM2, bos_token="<|im_start|>").go_template
    plain = go_render(go, [("user", "Hi")])
    assert plain == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                     "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    own = go_render(go, [("system", "Be brief."), ("user", "Hi")])
    assert "SmolLM" not in own and own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


@pytest.mark.parametrize("template,reason", [
    (GEMMA, "System role not supported"),
    (TRIMS, "renders test conversation 4 differently"),
    (NUMBERS, "does not mark the user turn the same way"),
    ("{{ messages[0]['content'] }}", "drops"),
])
def test_untranslatable_templates_are_refused_with_the_reason(template, reason):
    with pytest.raises(Untranslatable, match=reason):
        translate(template, bos_token="<bos>")


# --- the Go text/template subset, against text/template's documented semantics ---------------------------------

@pytest.mark.parametrize("source,data,want", [
    ("a {{- \" b \" -}} c", {}, "a b c"),
    ("x\n  {{- .A }}\n", {"A": 1}, "x1\n"),
    ("{{ if and .A .B }}y{{ else if .A }}a{{ else }}n{{ end }}", {"A": "s", "B": ""}, "a"),
    ("{{ range $i, $m := .L }}{{ $i }}={{ $m.V }};{{ end }}", {"L": [{"V": "p"}, {"V": "q"}]}, "0=p;1=q;"),
    ("{{ range .L }}{{ . }}{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range $i, $_ := .L }}{{ if eq (len (slice $.L $i)) 1 }}last{{ end }}{{ end }}", {"L": [1, 2, 3]}, "last"),
    ("{{ eq .A \"x\" \"y\" }} {{ ne 1 2 }} {{ not 0 }} {{ index .L 1 }}", {"A": "y", "L": [5, 6]}, "true true true 6"),
    ("{{ or .A .B }}", {"A": "", "B": "b"}, "b"),
])
def test_go_renderer(source, data, want):
    assert gotemplate.render(source, data) == want


@pytest.mark.parametrize("source,match", [
    ("{{ .A | printf \"%s\" }}", "unsupported|pipes"),
    ("{{ with .A }}x{{ end }}", "unsupported action"),
    ("{{ if .A }}x", "missing"),
    ("{{ .Missing }}", "can't evaluate field Missing"),
    ("{{ printf \"x\" }}", "unsupported function"),
])
def test_go_renderer_refuses_what_it_cannot_render(source, match):
    with pytest.raises(gotemplate.GoTemplateError, match=match):
        gotemplate.render(source, {"A": "a"})
