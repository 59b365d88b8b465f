//! A small SVG writer for the benchmark's plots: grouped bar charts, one group per record size,
//! one bar per series (lmqfs and its floor), each bar labelled with its value.

use std::fmt::Write as _;

/// One series of a chart: a name for the legend, a fill colour, one value per category.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub values: Vec<f64>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 90.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum at or above `max` (1, 2 or 5 times a power of ten) and its tick step.
fn axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0] {
        let step = step * magnitude;
        if max / step <= 8.0 {
            return ((max / step).ceil() * step, step);
        }
    }
    (max, max)
}

/// A grouped bar chart of `series` over `categories`, linear y axis from 0.
pub fn bar_chart(title: &str, y_label: &str, categories: &[String], series: &[Series]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (y_max, step) = axis(max);
    let y = |v: f64| TOP + plot_h * (1.0 - v / y_max);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid lines and y ticks.
    let mut tick = 0.0;
    while tick <= y_max + step / 2.0 {
        let ty = y(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{tick}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0
        );
        tick += step;
    }
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    // Bars.
    let group_w = plot_w / categories.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let group_x = LEFT + group_w * c as f64 + group_w * 0.1;
        for (s, series) in series.iter().enumerate() {
            let value = series.values.get(c).copied().unwrap_or(f64::NAN);
            let x = group_x + bar_w * s as f64;
            if value.is_finite() {
                let top = y(value);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {value:.0}</title></rect>"#,
                    bar_w * 0.92,
                    TOP + plot_h - top,
                    series.color,
                    escape(&series.name)
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{value:.0}</text>"#,
                    x + bar_w * 0.46,
                    top - 3.0
                );
            } else {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">n/a</text>"#,
                    x + bar_w * 0.46,
                    TOP + plot_h - 3.0
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            group_x + group_w * 0.4,
            TOP + plot_h + 18.0,
            escape(category)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="black"/>"#,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h
    );
    // Legend.
    let mut lx = LEFT;
    let ly = HEIGHT - 30.0;
    for series in series {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            series.color,
            lx + 16.0,
            escape(&series.name)
        );
        lx += 30.0 + 7.0 * series.name.chars().count() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}
