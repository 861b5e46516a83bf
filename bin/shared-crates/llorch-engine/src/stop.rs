//! Stop-string matching on streamed text: text that may still turn into a stop string is held
//! back, so text belonging to a match is never released.

/// Holds back the tail of the output that is a prefix of some stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    /// How many of `stops` (at the front) are the caller's; the rest end the turn.
    caller_stops: usize,
    held: String,
    /// Drop spaces at the start of the output (a transcript reply follows `Assistant:`).
    trim_start: bool,
}

/// Result of feeding text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopCheck {
    /// Safe to release this text (may be empty); keep generating.
    Continue(String),
    /// A stop string matched: release the text before it, then stop.
    Matched { release: String, stop: String },
    /// Text that ends the assistant's turn matched: release the text before it, then stop as
    /// at end-of-turn.
    EndOfTurn { release: String },
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self::for_turn(stops, &[], false)
    }

    /// A matcher for the caller's `stops` plus `turn_stops`, the text that ends the assistant's
    /// turn under the chat template; with `trim_start`, leading spaces of the output are dropped.
    pub fn for_turn(stops: &[String], turn_stops: &[String], trim_start: bool) -> Self {
        let mut all: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let caller_stops = all.len();
        all.extend(
            turn_stops
                .iter()
                .filter(|s| !s.is_empty() && !stops.contains(s))
                .cloned(),
        );
        Self {
            stops: all,
            caller_stops,
            held: String::new(),
            trim_start,
        }
    }

    /// Text ready to go out, minus leading spaces while nothing has gone out yet.
    fn out(&mut self, text: String) -> String {
        if !self.trim_start {
            return text;
        }
        let t = text.trim_start_matches(' ');
        if !t.is_empty() {
            self.trim_start = false;
        }
        t.to_string()
    }

    /// Feed newly decoded text.
    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck::Continue(self.out(text.to_string()));
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(k, s)| self.held.find(s.as_str()).map(|i| (i, k)))
            .min_by_key(|&(i, k)| (i, k));
        if let Some((i, k)) = first {
            let release = self.held[..i].to_string();
            self.held.clear();
            let release = self.out(release);
            return if k < self.caller_stops {
                StopCheck::Matched {
                    release,
                    stop: self.stops[k].clone(),
                }
            } else {
                StopCheck::EndOfTurn { release }
            };
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
        StopCheck::Continue(self.out(release))
    }

    /// Release whatever is held (generation ended for another reason).
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        self.out(held)
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
    fn turn_stops_end_the_turn_and_caller_stops_win_ties() {
        let turn = ["\nUser:".to_string()];
        let mut m = StopMatcher::for_turn(&[], &turn, true);
        assert_eq!(m.push(" "), StopCheck::Continue("".into()));
        assert_eq!(m.push(" Paris."), StopCheck::Continue("Paris.".into()));
        assert_eq!(m.push("\nUs"), StopCheck::Continue("".into()));
        assert_eq!(
            m.push("er: next"),
            StopCheck::EndOfTurn { release: "".into() }
        );
        // the same string given by the caller reports as the caller's stop
        let mut m = StopMatcher::for_turn(&turn, &turn, false);
        assert_eq!(
            m.push(" a\nUser:"),
            StopCheck::Matched {
                release: " a".into(),
                stop: "\nUser:".into()
            }
        );
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
