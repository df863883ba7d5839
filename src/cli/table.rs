//! Aligned plain-text tables that fit the terminal.

use std::io::IsTerminal;

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
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let lead: usize = widths.iter().take(n.saturating_sub(1)).map(|w| w + 2).sum();
    let last_max = width.map(|w| w.saturating_sub(lead).max(20));
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(n) {
            if i + 1 == n {
                line.push_str(&fit(cell, last_max));
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
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
}
