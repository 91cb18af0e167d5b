//! Names of topics and locks (PROTOCOL §4.8, §7.1): 1–256 characters of
//! `[A-Za-z0-9_.:/-]`. Exact names only — no wildcards — so that a name is also safe to
//! log, to use as a metrics label and, later, to route across a cluster.

/// The longest topic or lock name, in characters (all of them ASCII).
pub const NAME_MAX: usize = 256;

fn allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/' | b'-')
}

/// Checks a topic or lock name; the error says what is wrong with it, naming `what`
/// ("topic", "lock").
pub fn check(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "{what} name is {} bytes long; at most {NAME_MAX} characters are allowed",
            name.len()
        ));
    }
    match name.bytes().position(|c| !allowed(c)) {
        None => Ok(()),
        Some(at) => {
            let bad = name[at..].chars().next().unwrap_or_default();
            Err(format!(
                "{what} name {name:?} contains {bad:?}; names use only A-Z a-z 0-9 _ . : / -"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_protocol() {
        for good in ["a", "chat:room/42", "A.b_c-d", &"x".repeat(NAME_MAX)] {
            assert_eq!(check("topic", good), Ok(()), "{good}");
        }
        let cases = [
            ("", "must not be empty"),
            (&"x".repeat(NAME_MAX + 1) as &str, "at most 256"),
            ("a b", "contains ' '"),
            ("room*", "contains '*'"),
            ("café", "contains 'é'"),
        ];
        for (bad, why) in cases {
            let err = check("lock", bad).unwrap_err();
            assert!(
                err.contains(why) && err.starts_with("lock name"),
                "{bad}: {err}"
            );
        }
    }
}
