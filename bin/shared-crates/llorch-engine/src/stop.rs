//! Stop-string matching on streamed text: text that may still turn into a stop string is held
//! back, so text belonging to a match is never released.

/// Holds back the tail of the output that is a prefix of some stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// Result of feeding text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopCheck {
    /// Safe to release this text (may be empty); keep generating.
    Continue(String),
    /// A stop string matched: release the text before it, then stop.
    Matched { release: String, stop: String },
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Feed newly decoded text.
    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck::Continue(text.to_string());
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, s)) = first {
            let release = self.held[..i].to_string();
            let stop = s.clone();
            self.held.clear();
            return StopCheck::Matched { release, stop };
        }
        // keep the longest suffix that is a proper prefix of a stop string
        let mut keep_from = self.held.len();
        for (i, _) in self.held.char_indices() {
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                keep_from = i;
                break;
            }
        }
        let release = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopCheck::Continue(release)
    }

    /// Release whatever is held (generation ended for another reason).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_matches_and_never_releases_stop_text() {
        let mut m = StopMatcher::new(&["END".into()]);
        assert_eq!(m.push("hello E"), StopCheck::Continue("hello ".into()));
        assert_eq!(m.push("N"), StopCheck::Continue("".into()));
        assert_eq!(
            m.push("D!"),
            StopCheck::Matched {
                release: "".into(),
                stop: "END".into()
            }
        );
    }

    #[test]
    fn false_alarm_is_released() {
        let mut m = StopMatcher::new(&["\n\n".into()]);
        assert_eq!(m.push("a\n"), StopCheck::Continue("a".into()));
        assert_eq!(m.push("b"), StopCheck::Continue("\nb".into()));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn match_inside_one_chunk() {
        let mut m = StopMatcher::new(&["x".into(), "yz".into()]);
        assert_eq!(
            m.push("abyzcx"),
            StopCheck::Matched {
                release: "ab".into(),
                stop: "yz".into()
            }
        );
    }
}
