//! SentencePiece-style BPE over a scored vocabulary (GGUF `tokenizer.ggml.model = llama`).
//!
//! The text is split into UTF-8 characters; the adjacent pair whose concatenation is the
//! vocabulary piece with the highest score is merged (leftmost first on ties) until no pair is
//! a piece. Symbols that are not pieces fall back to `<0xXX>` byte tokens. Spaces are written
//! as `▁`; with `add_space_prefix` a `▁` is put before text at the start and after a special
//! token, as llama.cpp does.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::table::spm_byte_piece;

/// Splits text on the tokens that are matched literally (control and user-defined tokens),
/// leftmost-longest.
#[derive(Debug, Default)]
pub(crate) struct SpecialMatcher {
    /// Candidates by first byte, longest first.
    by_first: Vec<Vec<(Box<str>, u32)>>,
    count: usize,
}

/// A piece of input: plain text, or a token matched literally.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl SpecialMatcher {
    pub(crate) fn new(tokens: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut by_first: Vec<Vec<(Box<str>, u32)>> = vec![Vec::new(); 256];
        let mut count = 0;
        for (text, id) in tokens {
            if let Some(&b) = text.as_bytes().first() {
                by_first[b as usize].push((text.into_boxed_str(), id));
                count += 1;
            }
        }
        for list in &mut by_first {
            // Longest first; for equal text keep the lowest id.
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        SpecialMatcher { by_first, count }
    }

    /// Cut `text` into plain-text and token fragments (no empty text fragments).
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut out = Vec::new();
        if self.count == 0 {
            if !text.is_empty() {
                out.push(Fragment::Text(text));
            }
            return out;
        }
        let bytes = text.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let hit = self.by_first[bytes[i] as usize]
                .iter()
                .find(|(tok, _)| bytes[i..].starts_with(tok.as_bytes()));
            match hit {
                Some((tok, id)) => {
                    // A token starts with a UTF-8 lead byte, so `i` is a char boundary.
                    if start < i {
                        out.push(Fragment::Text(&text[start..i]));
                    }
                    out.push(Fragment::Token(*id));
                    i += tok.len();
                    start = i;
                }
                None => i += 1,
            }
        }
        if start < bytes.len() {
            out.push(Fragment::Text(&text[start..]));
        }
        out
    }
}

/// The scored-vocabulary tokenizer.
#[derive(Debug)]
pub(crate) struct SpmModel {
    vocab: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
    specials: SpecialMatcher,
}

/// One symbol of the working sequence: a byte range of the escaped text, linked to its
/// neighbours; `len == 0` once merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and its right neighbour.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl SpmModel {
    /// `pieces[i]` and `scores[i]` describe token `i`; `literal` lists the tokens matched
    /// literally in input text before the merge step.
    pub(crate) fn new(
        pieces: &[&str],
        scores: Vec<f32>,
        literal: Vec<(String, u32)>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Self {
        let mut vocab = HashMap::with_capacity(pieces.len());
        let mut byte_ids = [None; 256];
        for (id, &piece) in pieces.iter().enumerate() {
            vocab.entry(piece.to_owned()).or_insert(id as u32);
            if let Some(b) = spm_byte_piece(piece) {
                byte_ids[b as usize].get_or_insert(id as u32);
            }
        }
        let mut scores = scores;
        scores.resize(pieces.len(), 0.0);
        SpmModel {
            vocab,
            scores,
            byte_ids,
            unk,
            add_space_prefix,
            specials: SpecialMatcher::new(literal),
        }
    }

    /// Id of the piece with exactly this text.
    pub(crate) fn token_id(&self, piece: &str) -> Option<u32> {
        self.vocab.get(piece).copied()
    }

    /// Append the tokens of `text` (without BOS) to `out`.
    pub(crate) fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut after_special = true;
        let mut escaped = String::new();
        for frag in self.specials.split(text) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(s) => {
                    escaped.clear();
                    if self.add_space_prefix && after_special {
                        escaped.push('\u{2581}');
                    }
                    for c in s.chars() {
                        escaped.push(if c == ' ' { '\u{2581}' } else { c });
                    }
                    self.encode_escaped(&escaped, out);
                    after_special = false;
                }
            }
        }
    }

    fn try_push(
        &self,
        text: &str,
        syms: &[Symbol],
        left: Option<usize>,
        right: Option<usize>,
        heap: &mut BinaryHeap<Bigram>,
    ) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (syms[left], syms[right]);
        let piece = &text[l.start..r.start + r.len];
        if let Some(&id) = self.vocab.get(piece) {
            heap.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len: piece.len(),
            });
        }
    }

    /// Merge by score over one escaped text fragment.
    fn encode_escaped(&self, text: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let idx = syms.len();
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: idx.checked_sub(1),
                next: None,
            });
            if idx > 0 {
                syms[idx - 1].next = Some(idx);
            }
        }
        let mut heap = BinaryHeap::new();
        for i in 1..syms.len() {
            self.try_push(text, &syms, Some(i - 1), Some(i), &mut heap);
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.len || l.next != Some(bg.right) {
                continue; // stale: one side has changed since this pair was queued
            }
            syms[bg.left].len += r.len;
            syms[bg.left].next = r.next;
            syms[bg.right].len = 0;
            if let Some(n) = r.next {
                syms[n].prev = Some(bg.left);
            }
            self.try_push(text, &syms, l.prev, Some(bg.left), &mut heap);
            self.try_push(text, &syms, Some(bg.left), r.next, &mut heap);
        }
        let mut cur = if syms.is_empty() { None } else { Some(0) };
        while let Some(i) = cur {
            let s = syms[i];
            self.emit(&text[s.start..s.start + s.len], out);
            cur = s.next;
        }
    }

    /// A final symbol: its piece id, or one `<0xXX>` token per byte.
    fn emit(&self, piece: &str, out: &mut Vec<u32>) {
        if let Some(&id) = self.vocab.get(piece) {
            out.push(id);
            return;
        }
        for b in piece.bytes() {
            if let Some(id) = self.byte_ids[b as usize].or(self.unk) {
                out.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny hand-made vocabulary: control tokens, `▁`-pieces with scores and bytes.
    fn tiny(add_space_prefix: bool) -> SpmModel {
        let mut pieces: Vec<String> = ["<unk>", "<s>", "</s>", "<ctl>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut scores = vec![0.0; 4];
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
        }
        // id 260.. : normal pieces, higher score merges first.
        for (p, s) in [
            ("\u{2581}", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("w", -2.0),
            ("r", -2.0),
            ("d", -2.0),
            ("ll", -3.0),
            ("he", -4.0),
            ("hell", -5.0),
            ("\u{2581}hell", -6.0),
            ("lo", -2.5),
            ("\u{2581}w", -7.0),
            ("or", -8.0),
            ("\u{2581}wor", -9.0),
            ("ld", -11.0),
            ("\u{2581}worl", -12.0),
        ] {
            pieces.push(p.to_string());
            scores.push(s);
        }
        let literal = vec![("<ctl>".to_string(), 3)];
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        SpmModel::new(&pieces, scores, literal, Some(0), add_space_prefix)
    }

    fn pieces_of(m: &SpmModel, text: &str) -> Vec<String> {
        let by_id: HashMap<u32, &str> = m.vocab.iter().map(|(k, v)| (*v, k.as_str())).collect();
        let mut out = Vec::new();
        m.encode(text, &mut out);
        out.iter().map(|id| by_id[id].to_string()).collect()
    }

    #[test]
    fn merges_follow_scores_not_position() {
        let m = tiny(true);
        // "▁hello": lo (-2.5) outscores ll (-3) and forms first, so "hell" never can:
        // ▁ h e l lo → ▁ he l lo.
        assert_eq!(pieces_of(&m, "hello"), ["\u{2581}", "he", "l", "lo"]);
        // "▁hell": ll first, then he, then hell, then ▁hell.
        assert_eq!(pieces_of(&m, "hell"), ["\u{2581}hell"]);
        // " world" → "▁▁world": ▁w, or, ▁wor, then ld (-11) before ▁worl (-12), which goes
        // stale; ▁wor+ld is not a piece.
        assert_eq!(pieces_of(&m, " world"), ["\u{2581}", "\u{2581}wor", "ld"]);
    }

    #[test]
    fn space_prefix_only_at_start_and_after_special() {
        let m = tiny(true);
        assert_eq!(
            pieces_of(&m, "hell<ctl>hell"),
            ["\u{2581}hell", "<ctl>", "\u{2581}hell"]
        );
        let m = tiny(false);
        assert_eq!(pieces_of(&m, "hell<ctl>hell"), ["hell", "<ctl>", "hell"]);
        assert_eq!(pieces_of(&m, " hell"), ["\u{2581}hell"]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let m = tiny(false);
        assert_eq!(pieces_of(&m, "hé"), ["h", "<0xC3>", "<0xA9>"]);
        let mut ids = Vec::new();
        m.encode("\n", &mut ids);
        assert_eq!(ids, [4 + 0x0A]);
    }

    #[test]
    fn ties_merge_leftmost_first() {
        // "lll": both "ll" pairs score the same; the left one merges, leaving "ll" + "l".
        let m = tiny(false);
        assert_eq!(pieces_of(&m, "lll"), ["ll", "l"]);
    }

    #[test]
    fn matcher_prefers_longest_and_leftmost() {
        let m = SpecialMatcher::new(vec![
            ("<a>".into(), 1),
            ("<a><b>".into(), 2),
            ("b>".into(), 3),
        ]);
        assert_eq!(
            m.split("x<a><b>y<a>"),
            [
                Fragment::Text("x"),
                Fragment::Token(2),
                Fragment::Text("y"),
                Fragment::Token(1)
            ]
        );
        assert_eq!(m.split(""), []);
        assert_eq!(m.split("é<a>"), [Fragment::Text("é"), Fragment::Token(1)]);
    }
}
