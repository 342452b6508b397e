//! 国保 domain rules: identifiers and their check digits. Pure validation, no serde.

pub mod insurer;

pub use insurer::{InsurerNumber, InsurerNumberError};
