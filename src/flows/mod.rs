//! Use cases over the store, without HTTP: flow 5 (import, forward, 資格履歴ファイル) and
//! flow 4 (高額該当 import so far). Sealed payload schemas live here.

pub mod continuity;
pub mod decision;
pub mod feed;
pub mod history;
pub mod import;
pub mod index;
pub mod kogaku;
pub mod replicate;
pub mod sample;
pub mod transmission;
