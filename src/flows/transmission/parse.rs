//! Reading the files: decoding (UTF-8 or CP932, line by line), RFC 4180 records with their
//! lines through one reused `csv_core` parser per thread, the header check.

use super::*;

/// Decodes a whole file, line by line so that an undecodable byte is reported on its line.
/// Splitting on LF is safe in CP932 too: 0x0A is never a trail byte.
pub(crate) fn decode(
    bytes: &[u8],
    enc: Encoding,
    file: FileKind,
    problems: &mut Vec<Problem>,
) -> String {
    let bytes = match enc {
        Encoding::Utf8 => bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes),
        Encoding::Cp932 => bytes,
    };
    let mut out = String::with_capacity(bytes.len());
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let decoded = match enc {
            Encoding::Utf8 => std::str::from_utf8(line)
                .ok()
                .map(std::borrow::Cow::Borrowed),
            Encoding::Cp932 => {
                encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(line)
            }
        };
        match decoded {
            Some(text) => out.push_str(&text),
            None => problems.push(Problem {
                file,
                line: i as u64 + 1,
                field: None,
                reason: "undecodable",
            }),
        }
    }
    out
}

/// One CSV record with its line.
pub(crate) struct Row {
    pub(crate) line: u64,
    pub(crate) fields: Vec<String>,
}

thread_local! {
    /// This thread's CSV parser, reused file after file: building `csv_core`'s DFA costs
    /// about as much as parsing a one-household file, and `csv::Reader` builds one per file
    /// (it was the largest single cost of an HTTP import, docs/benchmarks.md, “RocksDB's CRC32C
    /// and the CSV parser”). Not cloned from one shared parser: `csv_core::Reader::clone`
    /// copies its transition table without its byte classes (csv-core 0.1.13), and the clone
    /// misparses. RFC 4180 with the defaults of `csv::ReaderBuilder`: comma, double quote,
    /// doubled quotes, CR, LF or CRLF, a UTF-8 BOM skipped.
    static PARSER: std::cell::RefCell<csv_core::Reader> =
        std::cell::RefCell::new(csv_core::Reader::new());
}

/// Runs `f` with this thread's parser, reset to its start (a fresh one if it is in use).
pub(super) fn with_parser<T>(f: impl FnOnce(&mut csv_core::Reader) -> T) -> T {
    PARSER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut parser) => {
            parser.reset();
            f(&mut parser)
        }
        Err(_) => f(&mut csv_core::Reader::new()),
    })
}

/// The records of an in-memory CSV file, in order.
pub(super) struct Records<'a, 'p> {
    input: &'a [u8],
    pos: usize,
    parser: &'p mut csv_core::Reader,
    /// The current record's unescaped fields, back to back; wiped when dropped or replaced.
    data: zeroize::Zeroizing<Vec<u8>>,
    ends: Vec<usize>,
}

impl<'a, 'p> Records<'a, 'p> {
    /// Reads `input` with `parser`, which must be fresh or reset.
    pub(super) fn new(input: &'a [u8], parser: &'p mut csv_core::Reader) -> Self {
        Records {
            input,
            pos: 0,
            parser,
            data: zeroize::Zeroizing::new(vec![0; input.len().clamp(1, 4096)]),
            ends: vec![0; 64],
        }
    }

    /// Bytes of the input read so far (the start of the next record).
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// The next record's fields, `None` at the end, `Err` if a field is not UTF-8 (which a
    /// `&str` input cannot produce: delimiters and quotes are ASCII).
    pub(super) fn next_record(&mut self) -> Option<Result<Vec<&str>, ()>> {
        let (mut nout, mut nend) = (0, 0);
        loop {
            let (result, nin, o, e) = self.parser.read_record(
                self.input.get(self.pos..).unwrap_or_default(),
                self.data.get_mut(nout..).unwrap_or_default(),
                self.ends.get_mut(nend..).unwrap_or_default(),
            );
            self.pos += nin;
            nout += o;
            nend += e;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    // Grown into a new buffer, so the old one is wiped, not left behind by
                    // a reallocation.
                    let mut bigger = zeroize::Zeroizing::new(vec![0; self.data.len() * 2]);
                    bigger
                        .get_mut(..self.data.len())
                        .unwrap_or_default()
                        .copy_from_slice(&self.data);
                    self.data = bigger;
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    self.ends.resize(self.ends.len() * 2, 0);
                }
                csv_core::ReadRecordResult::Record => break,
                csv_core::ReadRecordResult::End => return None,
            }
        }
        let Ok(text) = std::str::from_utf8(self.data.get(..nout).unwrap_or_default()) else {
            return Some(Err(()));
        };
        let mut fields = Vec::with_capacity(nend);
        let mut start = 0;
        for &end in self.ends.get(..nend).unwrap_or_default() {
            match text.get(start..end) {
                Some(f) => fields.push(f),
                None => return Some(Err(())),
            }
            start = end;
        }
        Some(Ok(fields))
    }
}

/// The transmission id a 世帯ファイル declares (its first record's `transmission_id`), for an
/// upload that takes the id from the files (the terminal). `None` when there is none to
/// read; validation then says why.
pub fn declared_id(setai: &[u8], enc: Encoding) -> Option<String> {
    let mut problems = Vec::new();
    let text = zeroize::Zeroizing::new(decode(setai, enc, FileKind::Setai, &mut problems));
    let records = rows(&text, &SETAI_HEADER, FileKind::Setai, &mut problems);
    let column = SETAI_HEADER.iter().position(|h| *h == "transmission_id")?;
    records
        .first()?
        .fields
        .get(column)
        .filter(|id| !id.is_empty())
        .cloned()
}

pub(crate) fn rows(
    text: &str,
    header: &[&str],
    file: FileKind,
    problems: &mut Vec<Problem>,
) -> Vec<Row> {
    // A problem of the whole record (or file), not of one field.
    let whole = |line, reason| Problem {
        file,
        line,
        field: None,
        reason,
    };
    if text.trim().is_empty() {
        problems.push(whole(0, "empty_file"));
        return Vec::new();
    }
    // Line (1-based) of a record from the parser's byte position before it. After a CRLF
    // record the parser stops on the LF, so a newline at the position itself counts.
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let line_at = |byte: usize| -> u64 { newlines.partition_point(|&n| n <= byte) as u64 + 1 };
    with_parser(|core| {
        let mut out = Vec::new();
        let mut first = true;
        let mut parser = Records::new(text.as_bytes(), core);
        loop {
            let line = line_at(parser.position());
            let record = match parser.next_record() {
                Some(Ok(record)) => record,
                None => break,
                Some(Err(())) => {
                    problems.push(whole(line, "csv_syntax"));
                    break;
                }
            };
            if first {
                first = false;
                if record.iter().copied().ne(header.iter().copied()) {
                    problems.push(whole(line, "header"));
                    return Vec::new();
                }
                continue;
            }
            if record.len() == 1 && record.first().is_some_and(|f| f.is_empty()) {
                continue; // blank line
            }
            if record.len() != header.len() {
                problems.push(whole(line, "column_count"));
                continue;
            }
            out.push(Row {
                line,
                fields: record.iter().map(|f| (*f).to_owned()).collect(),
            });
        }
        if out.is_empty() && problems.iter().all(|p| p.file != file) {
            problems.push(whole(0, "no_rows"));
        }
        out
    })
}

/// The file-level checks every layout-v1 import starts with: sizes, the declared transmission
/// id, decoding in the declared encoding, exact headers and CSV syntax. Returns each file's
/// rows in order with the row-level problems found so far, or every problem when a file is
/// unusable as a whole (the cross-file checks would only add noise). A bad transmission id
/// is reported against the first file.
pub(crate) fn read_files(
    files: &[(&[u8], FileKind, &[&str])],
    transmission_id: &str,
    encoding: Encoding,
) -> Result<(Vec<Vec<Row>>, Vec<Problem>), Rejected> {
    let mut problems = Vec::new();
    for (bytes, file, _) in files {
        if bytes.len() > MAX_FILE_BYTES {
            problems.push(Problem {
                file: *file,
                line: 0,
                field: None,
                reason: "file_too_large",
            });
        }
    }
    if !valid_transmission_id(transmission_id) {
        problems.push(Problem {
            file: files.first().map_or(FileKind::Setai, |f| f.1),
            line: 0,
            field: Some("transmission_id"),
            reason: "format",
        });
    }
    if !problems.is_empty() {
        return Err(Rejected { problems });
    }
    let texts: Vec<String> = files
        .iter()
        .map(|(bytes, file, _)| decode(bytes, encoding, *file, &mut problems))
        .collect();
    if !problems.is_empty() {
        return Err(Rejected { problems });
    }
    let rows: Vec<Vec<Row>> = files
        .iter()
        .zip(&texts)
        .map(|((_, file, header), text)| rows(text, header, *file, &mut problems))
        .collect();
    if problems
        .iter()
        .any(|p| p.line == 0 || matches!(p.reason, "header" | "csv_syntax"))
    {
        return Err(Rejected { problems });
    }
    Ok((rows, problems))
}
