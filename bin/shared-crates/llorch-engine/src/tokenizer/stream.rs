//! Incremental detokenization that never splits a UTF-8 character.

use super::Tokenizer;

/// Incremental, UTF-8-safe detokenizer: push token ids, get back exactly the text that became
/// complete. The concatenation of every `push` output and `finish()` equals
/// `tok.decode(all ids, skip_special)`, invalid sequences included (as U+FFFD).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// Bytes not yet returned: at most an incomplete UTF-8 sequence between calls.
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder with nothing pending.
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special,
            pending: Vec::with_capacity(8),
        }
    }

    /// Add one token; returns the text completed by it (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        if self.skip_special && self.tok.is_special(id) {
            return String::new();
        }
        self.pending.extend_from_slice(self.tok.token_bytes(id));
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = consumed + e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[consumed..valid])
                            .expect("validated prefix"),
                    );
                    match e.error_len() {
                        // Definitely invalid: the same U+FFFD that a whole-text lossy decode gives.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed = valid + bad;
                        }
                        // An incomplete character at the end: keep it for the next token.
                        None => {
                            consumed = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        out
    }

    /// Flush what is pending (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Generation was cut off (`max_tokens`): drop an incomplete character rather than send a
    /// U+FFFD for bytes whose continuation was never generated. Returns what is left to send
    /// (always empty: everything else was sent by `push`).
    pub fn cut(&mut self) -> String {
        self.pending.clear();
        String::new()
    }

    /// Whether bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
