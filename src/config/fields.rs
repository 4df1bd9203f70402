//! What `source` and `params` share: the longest value a field may hold,
//! and the error for a field nobody knows, with the nearest known name.

use crate::error::{shortened, Error, Result};
use crate::model::names::LockName;
use crate::protocol::Fields;

/// The longest directory a put param may name, and the longest `source.uri`:
/// Linux's PATH_MAX.
pub(crate) const MAX_PARAM_PATH: usize = 4096;

/// The nearest known name to a mistyped one, if it is close enough.
pub(crate) fn suggest(unknown: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        // Cheap first: no name more than two characters longer or shorter
        // is within two edits, and a huge name must not cost seconds.
        .filter(|k| unknown.chars().count().abs_diff(k.chars().count()) <= 2)
        .map(|k| (strsim::levenshtein(unknown, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k.to_string())
}

/// Fails naming the first field of `f` nobody took, with the nearest of
/// `known` when one is close, else the list.
pub(crate) fn reject_unknown_params(f: &Fields, known: &[&str]) -> Result<()> {
    if let Some(field) = f.leftover().first() {
        let hint = match suggest(field, known) {
            Some(s) => format!(" (did you mean {s}?)"),
            None if known.is_empty() => " (this step takes no params)".to_string(),
            None => format!(" (known: {})", known.join(", ")),
        };
        return Err(Error::bad_request(format!(
            "invalid payload: unknown field {}.{}{hint}",
            f.section(),
            shortened(field)
        )));
    }
    Ok(())
}

/// `value` as a lock name; the error names `field`.
pub(crate) fn lock_name(value: &str, field: &str) -> Result<LockName> {
    LockName::new(value).map_err(|e| Error::bad_request(format!("invalid payload: {field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_within_two_edits_is_suggested_the_nearest_first() {
        let known = ["acquire", "release", "claim", "check", "check_unclaimed"];
        assert_eq!(suggest("aquire", &known).as_deref(), Some("acquire"));
        assert_eq!(suggest("relase", &known).as_deref(), Some("release"));
        assert_eq!(suggest("chek", &known).as_deref(), Some("check"));
        assert_eq!(suggest("claím", &known).as_deref(), Some("claim"));
        assert_eq!(suggest("colour", &known), None);
        assert_eq!(suggest(&"x".repeat(1 << 20), &known), None);
    }
}
