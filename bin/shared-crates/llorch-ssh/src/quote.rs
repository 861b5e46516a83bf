//! POSIX shell quoting for the command line that ssh hands to the remote login shell.
//!
//! ssh joins its arguments into one string that the remote shell parses again, so every word we
//! send is quoted here: a value survives spaces, quotes, `;`, `$()`, globs and newlines as data.
//! The quoting (`'...'` with `'\''` for a quote) is understood by sh, dash, bash, zsh, ksh and fish.

use std::borrow::Cow;

/// Quote one word for a POSIX shell. Words made only of safe characters stay bare (readable logs).
pub fn quote(word: &str) -> Cow<'_, str> {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-+=:,./@%".contains(&b));
    if safe {
        return Cow::Borrowed(word);
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Quote a path, letting a leading `~` or `~/` expand to the remote `$HOME`.
pub fn quote_path(path: &str) -> String {
    if path == "~" {
        return "\"$HOME\"".to_string();
    }
    match path.strip_prefix("~/") {
        Some("") => "\"$HOME\"/".to_string(),
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None => quote(path).into_owned(),
    }
}

/// Quote `KEY=VALUE` for `env`; a value starting with `~/` expands to the remote `$HOME`.
pub fn quote_assignment(key: &str, value: &str) -> String {
    match value.strip_prefix("~/") {
        Some(rest) => format!(
            "{}\"$HOME\"/{}",
            quote(&format!("{key}=")),
            quote_or_empty(rest)
        ),
        None => quote(&format!("{key}={value}")).into_owned(),
    }
}

fn quote_or_empty(s: &str) -> Cow<'_, str> {
    if s.is_empty() {
        Cow::Borrowed("")
    } else {
        quote(s)
    }
}

/// Quote every word and join them with spaces.
pub fn join<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    words
        .into_iter()
        .map(|w| quote(w.as_ref()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `sh -c "printf '%s\0' <quoted words>"` and returns the words sh saw.
    fn through_sh(line: &str) -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {line}"))
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_terminator('\0').map(str::to_string).collect()
    }

    #[test]
    fn safe_words_stay_bare() {
        assert_eq!(quote("models"), "models");
        assert_eq!(quote("--json"), "--json");
        assert_eq!(quote("/usr/bin/llorch-pool"), "/usr/bin/llorch-pool");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn hostile_words_reach_sh_as_data() {
        let words = [
            "'; touch pwned #",
            "$(id)",
            "`id`",
            "a b\tc\nd",
            "\\n\\",
            "*",
            "~",
            "!!",
            "\"quoted\"",
            "",
            "ünïcødé 🙂",
            "-rf",
            "x'y\"z$HOME",
        ];
        assert_eq!(through_sh(&join(words)), words);
    }

    #[test]
    fn tilde_paths_expand_to_home() {
        let home = std::env::var("HOME").unwrap();
        let got = through_sh(&format!(
            "{} {} {}",
            quote_path("~/Projects/llama orch"),
            quote_path("/opt/x y"),
            quote_path("~")
        ));
        assert_eq!(
            got,
            [
                format!("{home}/Projects/llama orch"),
                "/opt/x y".into(),
                home.clone()
            ]
        );
        let got = through_sh(&format!(
            "{} {}",
            quote_assignment("LLORCH_HOME", "~/p q"),
            quote_assignment("A", "$(id)")
        ));
        assert_eq!(
            got,
            [format!("LLORCH_HOME={home}/p q"), "A=$(id)".to_string()]
        );
    }
}
