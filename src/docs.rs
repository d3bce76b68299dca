//! Reference pages: what the guide on the crate's front page leaves out. Each is also a file in
//! the repository's `docs/` directory, and every Rust example in them that needs no window runs as a test.

#[doc = include_str!("../docs/prompt-ui.md")]
pub mod prompt_ui {}

#[doc = include_str!("../docs/multiplayer.md")]
pub mod multiplayer {}

#[doc = include_str!("../docs/postgres.md")]
pub mod postgres {}

#[doc = include_str!("../docs/live-operations.md")]
pub mod live_operations {}

#[doc = include_str!("../docs/guarantees.md")]
pub mod guarantees {}

#[doc = include_str!("../docs/patterns.md")]
pub mod patterns {}
