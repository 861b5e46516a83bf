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

    /// Fuzz-style (bounded, seeded): random events written with random line endings and
    /// comments, cut into random chunks (also inside UTF-8 characters), come out exactly; random
    /// bytes never panic the parser.
    #[test]
    fn random_streams_and_garbage() {
        let mut rng = llorch_testkit::FuzzRng::new(12);
        let texts = ["", "a", "{\"t\":\"🙂\"}", "x y", "é:é", " lead", "data"];
        for case in 0..2000 {
            let n = 1 + rng.below(4);
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..n {
                let eol: &[u8] = if rng.below(2) == 0 { b"\n" } else { b"\r\n" };
                let mut ev = SseEvent::default();
                if rng.below(2) == 0 {
                    ev.event = (*rng.pick(&["token", "end", "x"])).to_string();
                    wire.extend_from_slice(format!("event: {}", ev.event).as_bytes());
                    wire.extend_from_slice(eol);
                }
                if rng.below(3) == 0 {
                    wire.extend_from_slice(b": keep-alive");
                    wire.extend_from_slice(eol);
                }
                if rng.below(2) == 0 {
                    ev.id = Some(rng.below(1000).to_string());
                    wire.extend_from_slice(format!("id: {}", ev.id.as_ref().unwrap()).as_bytes());
                    wire.extend_from_slice(eol);
                }
                let lines: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(&texts)).collect();
                for l in &lines {
                    wire.extend_from_slice(format!("data: {l}").as_bytes());
                    wire.extend_from_slice(eol);
                }
                ev.data = lines.join("\n");
                wire.extend_from_slice(eol);
                expected.push(ev);
            }
            let mut p = SseParser::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let k = 1 + rng.below(rest.len().min(9));
                got.extend(p.push(&rest[..k]));
                rest = &rest[k..];
            }
            assert_eq!(
                got,
                expected,
                "case {case}: {:?}",
                String::from_utf8_lossy(&wire)
            );
        }
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect();
            let mut p = SseParser::new();
            let _ = p.push(&bytes);
            let _ = p.push(b"\n\n");
        }
    }
}
