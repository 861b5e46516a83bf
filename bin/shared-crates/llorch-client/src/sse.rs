//! Incremental Server-Sent-Events parsing (the WHATWG event-stream format).

/// One dispatched SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field; empty when absent (then the event type is "message").
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `id:` field, when given.
    pub id: Option<String>,
}

/// Feed bytes as they arrive; complete events come out. Handles `\n`, `\r\n` and chunk
/// boundaries anywhere (also inside a multi-byte UTF-8 character).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// A parser with empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a chunk and return every event it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(rel) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + rel;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.current = SseEvent::default();
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.current));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_across_chunk_boundaries() {
        let mut p = SseParser::new();
        let mut evs = p.push(b"event: token\r\ndata: {\"a\":");
        assert!(evs.is_empty());
        evs = p.push(b"1}\r\n\r\n: keepalive\n\nid: 7\ndata: x\ndata: y\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "token");
        assert_eq!(evs[0].data, "{\"a\":1}");
        assert_eq!(evs[1].id.as_deref(), Some("7"));
        assert_eq!(evs[1].data, "x\ny");
    }

    #[test]
    fn split_utf8_is_reassembled() {
        let mut p = SseParser::new();
        let bytes = "data: 🙂\n\n".as_bytes();
        assert!(p.push(&bytes[..8]).is_empty());
        let evs = p.push(&bytes[8..]);
        assert_eq!(evs[0].data, "🙂");
    }
}
