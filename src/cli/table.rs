//! Aligned plain-text tables that fit the terminal.
//!
//! Invariants: every cell is shown through [`display_safe`] (no control, escape or bidi
//! character reaches the terminal) and capped at [`MAX_CELL_CHARS`]; rendering never panics,
//! whatever the cell lengths or the terminal width.

use std::io::IsTerminal;

use crate::text::display_safe;

/// The widest a cell may be, in characters, before it is cut with `…`.
pub(crate) const MAX_CELL_CHARS: usize = 200;

/// A table: a header row and data rows; the last column is shortened to fit the terminal.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as the header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table; on a terminal the last column is cut to the width in `$COLUMNS`
    /// (default 100).
    pub fn render(&self) -> String {
        let width = std::io::stdout().is_terminal().then(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(100)
        });
        render(&self.header, &self.rows, width)
    }
}

fn render(header: &[&str], rows: &[Vec<String>], width: Option<usize>) -> String {
    let n = header.len();
    // Every cell is escaped (it may hold provider text) and capped, so no cell can drive the
    // terminal or make a column absurdly wide.
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows.iter().map(|row| {
            row.iter()
                .take(n)
                .map(|c| display_safe(c, MAX_CELL_CHARS))
                .collect()
        }))
        .collect();
    let mut widths = vec![0; n];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let lead: usize = widths.iter().take(n.saturating_sub(1)).map(|w| w + 2).sum();
    let last_max = width.map(|w| w.saturating_sub(lead).max(20));
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == n {
                line.push_str(&fit(cell, last_max));
            } else {
                // Padded by hand: a `{:<w$}` width above u16::MAX panics.
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn fit(cell: &str, max: Option<usize>) -> String {
    match max {
        Some(max) if cell.chars().count() > max => {
            let kept: String = cell.chars().take(max.saturating_sub(1)).collect();
            format!("{kept}…")
        }
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_one_is_cut_to_fit() {
        let rows = vec![
            vec![
                "1".to_owned(),
                "queued".to_owned(),
                "http://a.example/very/long/path/indeed".to_owned(),
            ],
            vec!["100".to_owned(), "failed".to_owned(), "x".to_owned()],
        ];
        let out = render(&["ID", "STATE", "TARGET"], &rows, Some(35));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "ID   STATE   TARGET");
        assert_eq!(lines[1], "1    queued  http://a.example/very…");
        assert_eq!(lines[2], "100  failed  x");
    }

    #[test]
    fn huge_and_hostile_cells_neither_panic_nor_reach_the_terminal_raw() {
        let rows = vec![vec![
            "R".repeat(200_000),
            "\u{1b}[2J\nfake\u{202e}".to_owned(),
            "x".repeat(100_000),
        ]];
        for width in [None, Some(0), Some(1), Some(usize::MAX)] {
            let out = render(&["A", "B", "C"], &rows, width);
            assert_eq!(out.lines().count(), 2);
            assert!(!out.contains('\u{1b}') && !out.contains('\u{202e}'));
            assert!(out.lines().all(|l| l.chars().count() < 3 * MAX_CELL_CHARS));
        }
    }
}
