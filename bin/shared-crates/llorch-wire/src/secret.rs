//! [`Secret`]: a credential that travels in wire types but never shows in logs.

use serde::{Deserialize, Serialize};

/// A credential: serialized as the plain string, but `Debug` never prints it, so a logged
/// struct cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The credential itself (to put in a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_and_serde_keeps_the_value() {
        let s = Secret("hunter2-hunter2-hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"hunter2-hunter2-hunter2\""
        );
    }
}
