//! 国保 domain rules: identifiers and their check digits, text and date rules. Pure
//! validation, no serde.

pub mod continuity;
pub mod insurer;
pub mod kojin;
pub mod tasukai;
pub mod text;
pub mod wareki;

pub use insurer::{InsurerNumber, InsurerNumberError};
pub use kojin::{KojinNo, KojinNoError};
