//! Readable tables and times for the terminal; `--json` bypasses all of this.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A plain text table: columns padded to their widest cell, two spaces apart.
pub(super) struct Table<const N: usize> {
    header: [String; N],
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    pub(super) fn new(header: [&str; N]) -> Self {
        Self {
            header: header.map(str::to_owned),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: [String; N]) {
        // Names are free text: a control or formatting character must not be able to break the
        // layout or make the text read as something else.
        self.rows.push(cells.map(|c| escaped(&c)));
    }

    pub(super) fn render(&self) -> String {
        let mut widths = [0usize; N];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < N {
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` with every character that could break a terminal line or change how the text around
/// it reads (controls, bidirectional overrides, invisible characters) written as `\u{…}`.
pub(super) fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if keyward::keyward_core::is_unsafe_text_char(c) {
            out.push_str(&format!("\\u{{{:04X}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// An RFC 3339 time, or `none` when there is no time.
pub(super) fn time_or(at: Option<OffsetDateTime>, none: &str) -> String {
    at.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| none.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn columns_line_up_and_lines_carry_no_trailing_spaces() {
        let mut t = Table::new(["ID", "NAME", "STATE"]);
        t.row(["tok_1".into(), "déploiement".into(), "active".into()]);
        t.row(["tok_22".into(), "a\nb".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID      NAME         STATE\ntok_1   déploiement  active\ntok_22  a\\u{000A}b\n"
        );
        assert_eq!(escaped("invoice\u{202E}fdp.exe"), "invoice\\u{202E}fdp.exe");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            time_or(Some(datetime!(2026-07-01 12:30 UTC)), "never"),
            "2026-07-01T12:30:00Z"
        );
        assert_eq!(time_or(None, "never"), "never");
    }
}
