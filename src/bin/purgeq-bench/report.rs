//! The results: an aligned plain-text table, then the same rows as Markdown for the README.

/// One figure beside its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// purgeq's figure.
    pub purgeq: String,
    /// The baseline measured in the same run (empty if none).
    pub baseline: String,
    /// purgeq against the baseline.
    pub comparison: String,
    /// The issue's target (empty if none).
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

impl Row {
    fn cells(&self) -> [&str; 6] {
        let met = match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        [
            &self.figure,
            &self.purgeq,
            &self.baseline,
            &self.comparison,
            &self.target,
            met,
        ]
    }
}

const HEADER: [&str; 6] = [
    "figure",
    "purgeq",
    "baseline",
    "vs baseline",
    "target",
    "result",
];

/// Every row of the run.
#[derive(Debug)]
pub struct Report {
    quick: bool,
    rows: Vec<Row>,
}

impl Report {
    /// An empty report; a quick run's figures are marked as such.
    pub fn new(quick: bool) -> Self {
        Report {
            quick,
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Prints the aligned table, then the Markdown block.
    pub fn print(&self) {
        println!();
        println!("{}", self.context());
        println!();
        self.print_plain();
        println!();
        println!("Markdown (for the README):");
        println!();
        self.print_markdown();
    }

    fn context(&self) -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        format!(
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
        )
    }

    fn print_plain(&self) {
        let mut widths = HEADER.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row.cells()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(HEADER);
        line(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
        for row in &self.rows {
            line(row.cells());
        }
    }

    fn print_markdown(&self) {
        println!("```markdown");
        println!("{}", self.context());
        println!();
        println!("| {} |", HEADER.join(" | "));
        println!("|{}", "---|".repeat(HEADER.len()));
        for row in &self.rows {
            println!("| {} |", row.cells().join(" | "));
        }
        println!("```");
    }
}
