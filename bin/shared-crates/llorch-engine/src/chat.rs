//! Chat templates: the model's own Jinja template rendered with minijinja, with the Python
//! string methods (pycompat) and the helpers Hugging Face templates expect (`raise_exception`,
//! `strftime_now`). Blocks are trimmed as in transformers (`trim_blocks`, `lstrip_blocks`).

use anyhow::{anyhow, Result};
use llorch_wire::tools::ChatTools;
use llorch_wire::ChatMessage;
use minijinja::{context, Environment, Error, ErrorKind};

/// ChatML, for models without a template of their own.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + \
message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ \
'<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turn format, for Gemma GGUF files without a template: `assistant` becomes `model`, a
/// system message is prepended to the first user turn. BOS comes from the tokenizer (`add_bos`).
const GEMMA: &str = "{% set ns = namespace(prefix='') %}{% for message in messages %}\
{% if message['role'] == 'system' %}{% set ns.prefix = message['content'] | trim + '\\n\\n' %}{% else %}\
{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' + \
ns.prefix + message['content'] | trim + '<end_of_turn>\\n' }}{% set ns.prefix = '' %}{% endif %}{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// A plain-text transcript (`User: …` / `Assistant: …` lines under a one-line preamble), for
/// base models, which never learned turn tokens but continue a written dialogue well. A system
/// message replaces the preamble. The reply ends where the model starts the next line of
/// dialogue (see [`TRANSCRIPT_TURN_STOPS`]).
const TRANSCRIPT: &str = "{% set ns = namespace(preamble='The following is a conversation with a helpful \
assistant that answers questions.') %}{% for message in messages %}{% if message['role'] == 'system' %}\
{% set ns.preamble = message['content'] | trim %}{% endif %}{% endfor %}{{ ns.preamble + '\n\n' }}\
{% for message in messages %}{% if message['role'] != 'system' %}{{ ('User' if message['role'] == 'user' \
else 'Assistant' if message['role'] == 'assistant' else message['role'] | capitalize) + ': ' + \
message['content'] | trim + '\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/// Text that ends the assistant's turn in a [`ChatTemplate::transcript`] reply.
pub const TRANSCRIPT_TURN_STOPS: &[&str] =
    &["\n\nUser:", "\n\nAssistant:", "\nUser:", "\nAssistant:"];

const NAME: &str = "chat_template";

/// Instructions one render may execute. Real templates need a few hundred per message; one
/// that loops (nested `range`s, a recursive macro) fails with an error instead of hanging.
const FUEL: u64 = 20_000_000;

/// Largest rendered prompt in bytes: a template that repeats text cannot exhaust memory.
const MAX_RENDERED_BYTES: usize = 64 << 20;

/// The render's output, refusing to grow past [`MAX_RENDERED_BYTES`].
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered prompt would exceed {} MiB",
                MAX_RENDERED_BYTES >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A compiled chat template. `Send + Sync`.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    name: String,
    turn_stops: Vec<String>,
}

/// `raise_exception(msg)`: abort rendering with the template's own message.
fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(format)`: the local time formatted strftime-style.
fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format {format:?}"),
        )
    })?;
    Ok(out)
}

/// The clearest text of a minijinja error: kind, the template's own message, and where.
fn describe(err: &Error) -> String {
    let mut msg = match err.kind() {
        ErrorKind::OutOfFuel => {
            format!("the template ran more than {FUEL} instructions (a loop that does not end?)")
        }
        ErrorKind::InvalidOperation => err
            .detail()
            .map(str::to_owned)
            .unwrap_or_else(|| err.to_string()),
        _ => err.to_string(),
    };
    if let Some(line) = err.line() {
        if !msg.contains("line") {
            msg.push_str(&format!(" (template line {line})"));
        }
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        msg.push_str(&format!(": {e}"));
        source = e.source();
    }
    msg
}

impl ChatTemplate {
    /// Compile a Jinja chat template; `bos_token`/`eos_token` are passed to it by those names.
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_fuel(Some(FUEL));
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| anyhow!("chat template does not compile: {}", describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.unwrap_or_default().to_owned(),
            eos_token: eos_token.unwrap_or_default().to_owned(),
            name: "custom".into(),
            turn_stops: Vec::new(),
        })
    }

    /// Set the name this template is reported under (`/health`, logs).
    pub fn named(mut self, name: impl Into<String>) -> ChatTemplate {
        self.name = name.into();
        self
    }

    /// The name this template is reported under: `model`, `chatml`, `gemma`, `transcript`, or
    /// the file it was read from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Text that ends the assistant's turn when this template has no end-of-turn token (empty
    /// for token-delimited templates). A reply that reaches one ends as at end-of-turn.
    pub fn turn_stops(&self) -> &[String] {
        &self.turn_stops
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_chat(messages, None, add_generation_prompt)
    }

    /// Whether the template reads a `tools` variable (renders tool definitions itself).
    pub fn uses_tools(&self) -> bool {
        self.env
            .get_template(NAME)
            .is_ok_and(|t| t.undeclared_variables(false).contains("tools"))
    }

    /// Render `messages` offering `tools`: to a template that [uses them](Self::uses_tools) as
    /// its `tools` variable, else as `tools.system` appended to the first system message (or
    /// put first as one).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&ChatTools>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| anyhow!("chat template: {}", describe(&e)))?;
        let mut own;
        let (messages, tools) = match tools {
            Some(t) if !self.uses_tools() => {
                own = messages.to_vec();
                with_system(&mut own, &t.system);
                (&own[..], None)
            }
            t => (messages, t.map(|t| &t.tools)),
        };
        let mut out = CappedOutput(Vec::new());
        tmpl.render_captured_to(
            context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            },
            &mut out,
        )
        .map_err(|e| anyhow!("chat template failed: {}", describe(&e)))?;
        String::from_utf8(out.0).map_err(|_| anyhow!("chat template failed: output is not UTF-8"))
    }

    /// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n` per message).
    pub fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML, None, None)
            .expect("the built-in ChatML template compiles")
            .named("chatml")
    }

    /// Gemma's template (`<start_of_turn>user\ncontent<end_of_turn>\n`, replies as `model`).
    pub fn gemma() -> ChatTemplate {
        ChatTemplate::new(GEMMA, None, None)
            .expect("the built-in Gemma template compiles")
            .named("gemma")
    }

    /// The plain-text transcript template for base models (`User: …\nAssistant:`).
    pub fn transcript() -> ChatTemplate {
        let mut t = ChatTemplate::new(TRANSCRIPT, None, None)
            .expect("the built-in transcript template compiles")
            .named("transcript");
        t.turn_stops = TRANSCRIPT_TURN_STOPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        t
    }
}

/// `text` appended to the first message when it is a system message, else put first as one.
fn with_system(messages: &mut Vec<ChatMessage>, text: &str) {
    match messages.first_mut().filter(|m| m.role == "system") {
        Some(m) => {
            m.content.push_str("\n\n");
            m.content.push_str(text);
        }
        None => messages.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: text.into(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn chatml_renders_with_generation_prompt() {
        let t = ChatTemplate::chatml();
        let out = t
            .render(&[msg("system", "Be brief."), msg("user", "Hi")], true)
            .unwrap();
        assert_eq!(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let out = t.render(&[msg("user", "Hi")], false).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn gemma_renders_turns_and_folds_the_system_prompt() {
        let t = ChatTemplate::gemma();
        let msgs = [
            msg("system", "Be brief."),
            msg("user", "Hi "),
            msg("assistant", "Hello."),
            msg("user", "Bye"),
        ];
        let out = t.render(&msgs, true).unwrap();
        assert_eq!(
            out,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn transcript_writes_dialogue_lines_under_a_preamble() {
        let t = ChatTemplate::transcript();
        let out = t
            .render(
                &[
                    msg("user", " Hi "),
                    msg("assistant", "Hello."),
                    msg("user", "Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "The following is a conversation with a helpful assistant that answers questions.\n\n\
             User: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
        );
        let out = t
            .render(
                &[msg("system", "You are a pirate."), msg("user", "Hi")],
                true,
            )
            .unwrap();
        assert_eq!(out, "You are a pirate.\n\nUser: Hi\nAssistant:");
        assert_eq!(t.turn_stops()[2..], ["\nUser:", "\nAssistant:"]);
        assert!(ChatTemplate::chatml().turn_stops().is_empty());
    }

    #[test]
    fn raise_exception_message_reaches_the_error() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let err = t
            .render(&[msg("assistant", "x")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Conversation must start with user"), "{err}");
        assert_eq!(t.render(&[msg("user", "x")], true).unwrap(), "ok");
    }

    /// A template that loops (nested ranges, endless recursion) or repeats text without end
    /// fails with a message within a bounded time and memory; the same template still renders
    /// the conversations it was meant for.
    #[test]
    fn templates_that_loop_or_explode_fail_cleanly() {
        let src = "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}\
            {% if messages[0]['content'] == 'loop' %}{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}\
            {% elif messages[0]['content'] == 'recurse' %}{{ r(0) }}\
            {% elif messages[0]['content'] == 'big' %}{% for a in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}\
            {% else %}ok{% endif %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let start = std::time::Instant::now();
        for (what, needle) in [
            ("loop", "instructions"),
            ("recurse", "recursion"),
            ("big", "MiB"),
        ] {
            let err = t
                .render(&[msg("user", what)], true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{what}: {err}");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(t.render(&[msg("user", "hi")], true).unwrap(), "ok");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not compile"), "{err}");
    }

    #[test]
    fn python_string_methods_and_tokens() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.content.startswith('  ') %}[{{ m.content.strip() }}]{% else %}{{ m['content'] | trim }}{% endif %}{{ eos_token }}{% endfor %}";
        let t = ChatTemplate::new(src, Some("<s>"), Some("</s>")).unwrap();
        let out = t
            .render(&[msg("user", "  padded  "), msg("user", "plain ")], false)
            .unwrap();
        assert_eq!(out, "<s>[padded]</s>plain</s>");
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        let src = "{% for m in messages %}\n  {% if true %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(
            t.render(&[msg("user", "a"), msg("user", "b")], false)
                .unwrap(),
            "a\nb\n"
        );
    }

    #[test]
    fn tools_go_to_a_template_that_uses_them_else_into_the_system_prompt() {
        let tools = ChatTools {
            tools: vec![
                serde_json::json!({"type": "function", "function": {"name": "get_weather"}}),
            ],
            system: "Call get_weather.".into(),
        };
        let src =
            "{% if tools %}[{% for t in tools %}{{ t.function.name }}{% endfor %}]{% endif %}\
                   {% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert!(t.uses_tools());
        let out = t
            .render_chat(&[msg("user", "Hi")], Some(&tools), true)
            .unwrap();
        assert_eq!(out, "[get_weather]user:Hi;");
        assert_eq!(t.render(&[msg("user", "Hi")], true).unwrap(), "user:Hi;");
        // ChatML has no `tools`: the system-prompt rendering, into an existing system message.
        let chatml = ChatTemplate::chatml();
        assert!(!chatml.uses_tools());
        let out = chatml
            .render_chat(&[msg("user", "Hi")], Some(&tools), true)
            .unwrap();
        assert!(
            out.starts_with("<|im_start|>system\nCall get_weather.<|im_end|>"),
            "{out}"
        );
        let out = chatml
            .render_chat(
                &[msg("system", "Be brief."), msg("user", "Hi")],
                Some(&tools),
                true,
            )
            .unwrap();
        assert!(
            out.starts_with("<|im_start|>system\nBe brief.\n\nCall get_weather.<|im_end|>"),
            "{out}"
        );
    }

    #[test]
    fn strftime_now_formats_the_date() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", None, None).unwrap();
        let year = t.render(&[], false).unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.parse::<u32>().unwrap() >= 2024);
    }
}
