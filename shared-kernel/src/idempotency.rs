//! The `Idempotency-Key` a client sends with a create.

/// Longest accepted key, in bytes (all ASCII, so also in characters).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A key of 1 to 255 visible ASCII characters, spaces allowed only inside.
///
/// The rule is the one the OpenAPI document publishes (`^[!-~]([ -~]*[!-~])?$`,
/// length 1–255). HTTP's own header check is looser (it lets tabs through),
/// so the key is checked here rather than trusted because the header parsed:
/// a key the document forbids must get a 400, not a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the raw header bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        let (Some(first), Some(last)) = (raw.first(), raw.last()) else {
            return Err("must not be empty");
        };
        if raw.len() > MAX_IDEMPOTENCY_KEY {
            return Err("must be at most 255 characters");
        }
        if !raw.iter().all(|b| (b' '..=b'~').contains(b)) || *first == b' ' || *last == b' ' {
            return Err("must be visible ASCII characters, spaces only between them");
        }
        // Every byte is ASCII (checked above), so this cannot fail.
        let key = std::str::from_utf8(raw).map_err(|_| "must be visible ASCII characters")?;
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii_with_inner_spaces() {
        for key in ["a", "order 42", "~!x-Y_z.9~", &"k".repeat(255)] {
            assert_eq!(IdempotencyKey::parse(key.as_bytes()).map(|k| k.0), Ok(key.to_owned()));
        }
    }

    #[test]
    fn refuses_what_the_published_pattern_forbids() {
        let too_long = "k".repeat(256);
        for key in [
            "",
            " ",
            " a",
            "a ",
            "a\tb",
            "\t",
            "é",
            "a\u{7f}",
            "a\nb",
            too_long.as_str(),
        ] {
            assert!(IdempotencyKey::parse(key.as_bytes()).is_err(), "{key:?} was accepted");
        }
        assert!(IdempotencyKey::parse(&[b'a', 0x80]).is_err());
    }
}
