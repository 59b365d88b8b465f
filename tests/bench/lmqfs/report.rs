//! The results table: each figure, its floor, the ratio, and the bar it is judged against.

use std::fmt::Write as _;

/// How a figure is written, and which way is better.
#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    /// Megabytes (10^6) per second: higher is better.
    MbPerS,
    /// Microseconds: lower is better.
    Micros,
    /// Milliseconds: lower is better.
    Millis,
    /// Mebibytes of memory: lower is better.
    MiB,
}

impl Unit {
    fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return "?".into();
        }
        let number = if value >= 100.0 {
            format!("{value:.0}")
        } else if value >= 10.0 {
            format!("{value:.1}")
        } else {
            format!("{value:.2}")
        };
        let unit = match self {
            Unit::MbPerS => "MB/s",
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::MiB => "MiB",
        };
        format!("{number} {unit}")
    }
}

/// What a figure is judged against.
#[derive(Clone, Copy)]
pub enum Bar {
    /// Nothing: the figure is informative.
    None,
    /// lmqfs / floor at least this (throughput).
    RatioAtLeast(f64),
    /// lmqfs / floor at most this (latency).
    RatioAtMost(f64),
    /// The figure itself below this, in its unit.
    Below(f64),
    /// The figure below the first number and lmqfs / floor (the same figure for a smaller
    /// input) at most the second: flat in data size.
    BelowAndFlat(f64, f64),
}

impl Bar {
    fn describe(self, unit: Unit) -> String {
        match self {
            Bar::None => "—".into(),
            Bar::RatioAtLeast(r) => format!("ratio ≥ {r}"),
            Bar::RatioAtMost(r) => format!("ratio ≤ {r}"),
            Bar::Below(v) => format!("< {}", unit.format(v)),
            Bar::BelowAndFlat(v, r) => format!("< {}, ratio ≤ {r}", unit.format(v)),
        }
    }
}

/// One line of the table.
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub unit: Unit,
    pub ours: f64,
    /// The floor's figure and what the floor is; `None` where there is no floor.
    pub floor: Option<(f64, String)>,
    pub bar: Bar,
    /// Why the row has no figure (it was skipped), if so.
    pub skipped: Option<String>,
}

impl Row {
    pub fn new(section: &'static str, figure: String, unit: Unit, ours: f64) -> Row {
        Row {
            section,
            figure,
            unit,
            ours,
            floor: None,
            bar: Bar::None,
            skipped: None,
        }
    }

    pub fn floor(mut self, value: f64, name: &str) -> Row {
        self.floor = Some((value, name.to_string()));
        self
    }

    pub fn bar(mut self, bar: Bar) -> Row {
        self.bar = bar;
        self
    }

    pub fn skipped(mut self, why: &str) -> Row {
        self.skipped = Some(why.to_string());
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.floor.as_ref().map(|(floor, _)| self.ours / floor)
    }

    /// `Some(true)` met, `Some(false)` not met, `None` when there is no bar or no figure.
    pub fn met(&self) -> Option<bool> {
        if self.skipped.is_some() {
            return None;
        }
        let ratio = self.ratio().unwrap_or(f64::NAN);
        match self.bar {
            Bar::None => None,
            Bar::RatioAtLeast(r) => Some(ratio >= r),
            Bar::RatioAtMost(r) => Some(ratio <= r),
            Bar::Below(v) => Some(self.ours < v),
            Bar::BelowAndFlat(v, r) => Some(self.ours < v && ratio <= r),
        }
    }

    /// True when the row has every number it should have.
    pub fn complete(&self) -> bool {
        self.skipped.is_some()
            || (self.ours.is_finite() && self.floor.as_ref().is_none_or(|(f, _)| f.is_finite()))
    }

    fn cells(&self) -> [String; 6] {
        if let Some(why) = &self.skipped {
            return [
                self.figure.clone(),
                format!("skipped: {why}"),
                String::new(),
                String::new(),
                self.bar.describe(self.unit),
                String::new(),
            ];
        }
        let floor = match &self.floor {
            Some((value, name)) => format!("{} ({name})", self.unit.format(*value)),
            None => "—".into(),
        };
        let ratio = self.ratio().map_or("—".into(), |r| format!("{r:.2}"));
        let met = match self.met() {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "",
        };
        [
            self.figure.clone(),
            self.unit.format(self.ours),
            floor,
            ratio,
            self.bar.describe(self.unit),
            met.into(),
        ]
    }
}

const HEADER: [&str; 6] = ["figure", "lmqfs", "floor", "ratio", "bar", ""];

/// The table as aligned text, one block per section.
pub fn text(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&HEADER.map(String::from));
    let mut section = "";
    for (row, cells) in rows.iter().zip(&cells) {
        if row.section != section {
            section = row.section;
            let _ = writeln!(out, "-- {section}");
        }
        out.push_str(&line(cells));
    }
    out
}

/// The table as Markdown, with a section column.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from("| section | figure | lmqfs | floor | ratio | bar | |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for row in rows {
        // `<offset>` would read as an HTML tag.
        let cells = row
            .cells()
            .map(|c| c.replace('<', "&lt;").replace('>', "&gt;"));
        let _ = writeln!(out, "| {} | {} |", row.section, cells.join(" | "));
    }
    out
}

/// The rows whose bar is not met, as `figure: value vs bar`.
pub fn not_met(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.met() == Some(false))
        .map(|r| {
            let cells = r.cells();
            format!(
                "{}: {} (ratio {}; bar {})",
                r.figure, cells[1], cells[3], cells[4]
            )
        })
        .collect()
}
