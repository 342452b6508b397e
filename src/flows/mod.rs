//! Use cases over the store, without HTTP: flow 5 (import, forward, 資格履歴ファイル), flow 4
//! (高額該当 import, continuity extraction, decisions, confirmation and carry-over) and a
//! person's disclosure record. Sealed payload schemas live here.

pub mod continuity;
pub mod decision;
pub mod disclosure;
pub mod feed;
pub mod history;
pub mod import;
pub mod index;
pub mod kogaku;
pub mod replicate;
pub mod sample;
pub mod transmission;
