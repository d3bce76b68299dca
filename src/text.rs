//! Text the ledger keeps exactly as given: a caller's text with a character a store cannot keep
//! (PostgreSQL refuses NUL in text) is refused, never changed.

use serde::{Deserialize, Serialize};

/// A text given to the ledger that it cannot keep as written: it holds a NUL character, which
/// PostgreSQL refuses in text. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "the {field} {text:?} holds a NUL character, which the ledger cannot keep; nothing was written"
)]
pub struct InvalidText {
    /// What the text is (`"order id"`, `"refund reason"`).
    pub field: String,
    /// The text as given.
    pub text: String,
}

/// `Ok` when every store can keep `text` exactly as written.
pub(crate) fn keepable(field: &str, text: &str) -> Result<(), InvalidText> {
    keepable_named(|| field.to_owned(), text)
}

/// [`keepable`], naming the field only for a refusal (for names built from data, checked often).
pub(crate) fn keepable_named(
    field: impl FnOnce() -> String,
    text: &str,
) -> Result<(), InvalidText> {
    // A byte search (memchr): checked on every value of every save.
    if text.as_bytes().contains(&0) {
        Err(InvalidText {
            field: field(),
            text: text.to_owned(),
        })
    } else {
        Ok(())
    }
}
