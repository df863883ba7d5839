//! The results: two aligned plain-text tables (figures beside their baselines; latencies as the
//! table grows), then the same tables as Markdown for BENCHMARKS.md.

/// One figure beside its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    /// What is measured.
    pub figure: String,
    /// purgeq's figure.
    pub purgeq: String,
    /// The baseline measured in the same run (empty if none).
    pub baseline: String,
    /// purgeq against the baseline.
    pub comparison: String,
    /// The target (empty if none).
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

/// One latency (or ratio) at each table size.
#[derive(Debug, Clone)]
pub struct ScaleRow {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    /// What is measured.
    pub figure: String,
    /// One cell per table size, smallest first.
    pub cells: Vec<String>,
    /// The largest size against the smallest.
    pub growth: String,
    /// The target (empty if none).
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

fn verdict(met: Option<bool>) -> String {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    }
    .to_owned()
}

/// Every row of the run.
#[derive(Debug)]
pub struct Report {
    quick: bool,
    /// The 1-minute load average when the run started.
    load_at_start: Option<String>,
    notes: Vec<String>,
    rows: Vec<Row>,
    sizes: Vec<usize>,
    scale: Vec<ScaleRow>,
}

impl Report {
    /// An empty report; a quick run's figures are marked as such.
    pub fn new(quick: bool, sizes: &[usize]) -> Self {
        Report {
            quick,
            load_at_start: load_average(),
            notes: Vec::new(),
            rows: Vec::new(),
            sizes: sizes.to_vec(),
            scale: Vec::new(),
        }
    }

    /// Adds a line under the machine description (a backend's version and settings, a skip).
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Adds a row to the first table.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Adds a row to the latency table.
    pub fn push_scale(&mut self, row: ScaleRow) {
        self.scale.push(row);
    }

    /// Prints both tables, then the Markdown block.
    pub fn print(&self) {
        let (first, second) = (self.first_table(), self.scale_table());
        println!();
        for line in self.context() {
            println!("{line}");
        }
        for table in [&first, &second] {
            if table.1.is_empty() {
                continue;
            }
            println!();
            print_plain(table);
        }
        println!();
        println!("Markdown (for BENCHMARKS.md):");
        println!();
        println!("```markdown");
        for line in self.context() {
            println!("{line}  ");
        }
        for table in [&first, &second] {
            if table.1.is_empty() {
                continue;
            }
            println!();
            print_markdown(table);
        }
        println!("```");
    }

    fn context(&self) -> Vec<String> {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut lines = vec![format!(
            "purgeq {} on {} {} ({cores} cores), SQLite {}{}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            rusqlite::version(),
            if self.quick {
                " -- QUICK RUN: smoke test only, figures not meaningful"
            } else {
                ""
            }
        )];
        if let (Some(start), Some(end)) = (&self.load_at_start, load_average()) {
            lines.push(format!(
                "load average {start} at the start, {end} at the end (other processes share the \
                 cores; absolute times are noise, compare each figure with its baseline)"
            ));
        }
        lines.extend(self.notes.iter().cloned());
        lines
    }

    fn first_table(&self) -> Table {
        let header = [
            "backend",
            "figure",
            "purgeq",
            "baseline (same run)",
            "vs baseline",
            "target",
            "result",
        ];
        let rows = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.backend.to_owned(),
                    r.figure.clone(),
                    r.purgeq.clone(),
                    r.baseline.clone(),
                    r.comparison.clone(),
                    r.target.clone(),
                    verdict(r.met),
                ]
            })
            .collect();
        (header.map(str::to_owned).to_vec(), rows)
    }

    fn scale_table(&self) -> Table {
        let mut header = vec!["backend".to_owned(), "latency (p50 / p99)".to_owned()];
        header.extend(
            self.sizes
                .iter()
                .map(|&n| format!("{} rows", size_label(n))),
        );
        let (first, last) = (
            self.sizes.first().copied().unwrap_or(0),
            self.sizes.last().copied().unwrap_or(0),
        );
        header.push(format!("{} vs {}", size_label(last), size_label(first)));
        header.extend(["target", "result"].map(str::to_owned));
        let rows = self
            .scale
            .iter()
            .map(|r| {
                let mut cells = vec![r.backend.to_owned(), r.figure.clone()];
                cells.extend(r.cells.iter().cloned());
                cells.extend([r.growth.clone(), r.target.clone(), verdict(r.met)]);
                cells
            })
            .collect();
        (header, rows)
    }
}

/// A header and its rows.
type Table = (Vec<String>, Vec<Vec<String>>);

fn print_plain((header, rows): &Table) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
}

fn print_markdown((header, rows): &Table) {
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// `10000` as `10k`, `1000000` as `1M`.
pub fn size_label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_short() {
        assert_eq!(size_label(10_000), "10k");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(size_label(1_500), "1500");
        assert_eq!(size_label(12), "12");
    }
}
