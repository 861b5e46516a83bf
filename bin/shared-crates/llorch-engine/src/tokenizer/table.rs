//! Compact per-token tables (vocabulary strings, raw bytes) and the byte mappings of the two
//! vocabulary styles: GPT-2 byte-level characters and SentencePiece `▁` / `<0xXX>` pieces.

/// Concatenated byte strings addressed by token id: one allocation instead of one per token.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByteTable {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl ByteTable {
    pub(crate) fn with_capacity(n: usize, bytes: usize) -> Self {
        ByteTable {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(n),
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len() as u32);
    }

    pub(crate) fn get(&self, id: usize) -> Option<&[u8]> {
        let end = *self.ends.get(id)? as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        Some(&self.data[start..end])
    }
}

/// Like [`ByteTable`] but every entry is a `str`; `None` entries are empty strings that
/// [`StrTable::get`] reports as absent.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrTable {
    data: String,
    ends: Vec<u32>,
    present: Vec<bool>,
}

impl StrTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        StrTable {
            data: String::with_capacity(n * 8),
            ends: Vec::with_capacity(n),
            present: Vec::with_capacity(n),
        }
    }

    pub(crate) fn push(&mut self, s: Option<&str>) {
        self.data.push_str(s.unwrap_or(""));
        self.ends.push(self.data.len() as u32);
        self.present.push(s.is_some());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, id: usize) -> Option<&str> {
        if !*self.present.get(id)? {
            return None;
        }
        let end = self.ends[id] as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        Some(&self.data[start..end])
    }
}

/// The GPT-2 byte-to-character table: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order, so every byte has a visible, non-space character.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let code = if printable {
            b as u32
        } else {
            let c = next;
            next += 1;
            c
        };
        *slot = char::from_u32(code).expect("valid code point");
    }
    table
}

/// Inverse of [`byte_to_char_table`], indexed by code point (all mapped chars are < 324).
pub(crate) struct ByteDecoder {
    by_char: Vec<i16>,
}

impl ByteDecoder {
    pub(crate) fn new() -> Self {
        let mut by_char = vec![-1i16; 324];
        for (b, c) in byte_to_char_table().iter().enumerate() {
            by_char[*c as usize] = b as i16;
        }
        ByteDecoder { by_char }
    }

    /// Append the raw bytes of a byte-level token; characters outside the table (which a
    /// well-formed vocabulary does not have) are kept as their own UTF-8.
    pub(crate) fn decode_into(&self, piece: &str, out: &mut Vec<u8>) {
        for c in piece.chars() {
            match self.by_char.get(c as usize) {
                Some(&b) if b >= 0 => out.push(b as u8),
                _ => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

/// The byte named by a SentencePiece byte piece `<0xXX>`, if `piece` is one.
pub(crate) fn spm_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Append the raw bytes of a SentencePiece piece: `<0xXX>` is that byte, `▁` is a space.
pub(crate) fn spm_decode_into(piece: &str, out: &mut Vec<u8>) {
    if let Some(b) = spm_byte_piece(piece) {
        out.push(b);
        return;
    }
    let mut rest = piece;
    while let Some(pos) = rest.find('\u{2581}') {
        out.extend_from_slice(&rest.as_bytes()[..pos]);
        out.push(b' ');
        rest = &rest[pos + '\u{2581}'.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_round_trips_all_bytes() {
        let table = byte_to_char_table();
        let dec = ByteDecoder::new();
        assert_eq!(table[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(table[b'\n' as usize], '\u{10a}'); // Ċ
        assert_eq!(table[b'a' as usize], 'a');
        let s: String = table.iter().collect();
        let mut out = Vec::new();
        dec.decode_into(&s, &mut out);
        assert_eq!(out, (0u8..=255).collect::<Vec<_>>());
    }

    #[test]
    fn spm_pieces_decode() {
        let mut out = Vec::new();
        spm_decode_into("\u{2581}Hello\u{2581}", &mut out);
        spm_decode_into("<0x0A>", &mut out);
        spm_decode_into("<0xE2>", &mut out);
        assert_eq!(out, b" Hello \n\xE2");
        assert_eq!(spm_byte_piece("<0x1>"), None);
    }

    #[test]
    fn tables_address_by_id() {
        let mut t = ByteTable::with_capacity(2, 4);
        t.push(b"ab");
        t.push(b"");
        t.push(b"c");
        assert_eq!(t.get(0), Some(&b"ab"[..]));
        assert_eq!(t.get(1), Some(&b""[..]));
        assert_eq!(t.get(2), Some(&b"c"[..]));
        assert_eq!(t.get(3), None);
        let mut s = StrTable::with_capacity(2);
        s.push(Some("x"));
        s.push(None);
        assert_eq!((s.get(0), s.get(1), s.len()), (Some("x"), None, 2));
    }
}
