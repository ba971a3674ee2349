//! `--html FILE`: one self-contained page per run (no script, style or font from the
//! network), with its charts drawn as inline SVG: latency by percentile, end to end and
//! the server's own; per site over time, calls in progress and requests queued; P(wait)
//! measured beside Erlang C. A few lines of inline script mark each chart with how many
//! of its shapes the browser laid out (`data-drawn`), which the tests read back from
//! headless Chromium.

use std::fmt::Write;

use serde_json::Value;

use crate::report::Latency;

/// Plot area of a chart, in SVG units (the page scales it to its width).
const W: f64 = 720.0;
const H: f64 = 260.0;
/// Margins: left for the y labels, bottom for the x labels.
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;

/// A page: a title, a table of figures, and charts (SVG elements), in order.
pub struct Page {
    title: String,
    rows: Vec<(String, String)>,
    charts: Vec<(String, String)>,
}

impl Page {
    pub fn new(title: &str) -> Page {
        Page {
            title: title.to_string(),
            rows: Vec::new(),
            charts: Vec::new(),
        }
    }

    /// A row of the figures table.
    pub fn row(&mut self, name: &str, value: impl ToString) {
        self.rows.push((name.to_string(), value.to_string()));
    }

    /// Latency by percentile (x: 50 %, 90 %, 99 % … on a log scale of 1/(1−q); y: ms on
    /// a log scale, a decade per tick), one line per series.
    pub fn percentiles(&mut self, title: &str, series: &[(&str, Vec<(f64, f64)>)]) {
        let x = |q: f64| LEFT + (1.0 / (1.0 - q.min(0.99999))).log10() / 5.0 * (W - LEFT); // 0.5 → 0.3 of 5
        let values = || {
            series
                .iter()
                .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
                .filter(|v| *v > 0.0)
        };
        let lo = values().fold(f64::INFINITY, f64::min).max(1e-3).log10().floor();
        let hi = values()
            .fold(0.0, f64::max)
            .max(1e-3)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let y = |v: f64| (H - BOTTOM) * (1.0 - ((v.max(1e-3).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
        let mut svg = frame();
        for d in (lo as i32)..=(hi as i32) {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"#,
                LEFT - 4.0,
                y(10f64.powi(d)) + 4.0,
                trim(10f64.powi(d))
            );
        }
        for (i, label) in ["50 %", "90 %", "99 %", "99.9 %", "99.99 %"].iter().enumerate() {
            let q = if i == 0 {
                0.5
            } else {
                1.0 - 10f64.powi(-(i as i32))
            };
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
                x(q),
                H - BOTTOM + 18.0
            );
        }
        for (i, (name, pts)) in series.iter().enumerate() {
            let points: Vec<String> = pts
                .iter()
                .map(|&(q, v)| format!("{:.1},{:.1}", x(q), y(v)))
                .collect();
            let colour = COLOURS[i % COLOURS.len()];
            let _ = write!(
                svg,
                r#"<polyline class="shape" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            legend(&mut svg, i, name, colour);
        }
        self.charts.push((title.to_string(), svg));
    }

    /// A heat map: one row per site, one column per sample, darker for more (`what`
    /// names the value); `step_s` seconds between samples.
    pub fn heat_map(&mut self, title: &str, what: &str, rows: &[(u16, Vec<u32>)], step_s: f64) {
        let cols = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0).max(1);
        let max = rows
            .iter()
            .flat_map(|(_, r)| r.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1);
        let (cw, rh) = ((W - LEFT) / cols as f64, (H - BOTTOM) / rows.len().max(1) as f64);
        let mut svg = String::new();
        for (i, (site, values)) in rows.iter().enumerate() {
            let y = i as f64 * rh;
            if rows.len() <= 20 || i % (rows.len() / 10).max(1) == 0 {
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">site {site}</text>"#,
                    LEFT - 4.0,
                    y + rh / 2.0 + 4.0
                );
            }
            for (j, v) in values.iter().enumerate() {
                let shade = f64::from(*v) / f64::from(max);
                let _ = write!(
                    svg,
                    r#"<rect class="shape" x="{:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="rgb(31,119,180)" fill-opacity="{:.3}"><title>site {site}, {:.1} s: {v} {what}</title></rect>"#,
                    LEFT + j as f64 * cw,
                    cw.max(0.5),
                    rh.max(0.5),
                    0.05 + 0.95 * shade,
                    j as f64 * step_s
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="{}">0 s</text><text x="{W}" y="{}" text-anchor="end">{:.0} s; darkest: {max} {what}</text>"#,
            H - BOTTOM + 18.0,
            H - BOTTOM + 18.0,
            cols as f64 * step_s
        );
        self.charts.push((title.to_string(), svg));
    }

    /// Bars side by side, with their values written above.
    pub fn bars(&mut self, title: &str, bars: &[(&str, f64)]) {
        let y_max = nice_max(bars.iter().map(|b| b.1));
        let mut svg = axes(y_max, "");
        let w = (W - LEFT) / (bars.len() as f64 * 2.0 + 1.0);
        for (i, (name, v)) in bars.iter().enumerate() {
            let x = LEFT + w * (1.0 + 2.0 * i as f64);
            let y = y_at(*v, y_max);
            let colour = COLOURS[i % COLOURS.len()];
            let _ = write!(
                svg,
                r#"<rect class="shape" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{v:.4}</text><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                (H - BOTTOM - y).max(0.5),
                x + w / 2.0,
                y - 4.0,
                x + w / 2.0,
                H - BOTTOM + 18.0,
                escape(name)
            );
        }
        self.charts.push((title.to_string(), svg));
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1><table>",
            escape(&self.title),
            escape(&self.title)
        );
        for (name, value) in &self.rows {
            let _ = write!(
                html,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(name),
                escape(value)
            );
        }
        html.push_str("</table>");
        for (title, svg) in &self.charts {
            let _ = write!(
                html,
                r#"<figure><figcaption>{}</figcaption><svg class="chart" viewBox="0 -12 {} {}" role="img">{svg}</svg></figure>"#,
                escape(title),
                W + 10.0,
                H + 12.0
            );
        }
        let _ = writeln!(html, "<script>{SCRIPT}</script></body></html>");
        html
    }
}

/// The figures table of a `--json` report: its numbers and texts, and its counts by
/// cause (`{"code", "cause", "count"}`), one row each.
pub fn table(page: &mut Page, report: &Value) {
    let Some(fields) = report.as_object() else {
        return;
    };
    for (name, v) in fields {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => page.row(name, format!("{f:.3}")),
                _ => page.row(name, n),
            },
            Value::String(text) => page.row(name, text),
            Value::Array(items) => {
                for item in items {
                    if let (Some(cause), Some(code), Some(count)) = (
                        item["cause"].as_str(),
                        item["code"].as_u64(),
                        item["count"].as_u64(),
                    ) {
                        page.row(&format!("{name}: {cause} (0x{code:02X})"), count);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The latency by percentile of an HDR histogram: points from the median to 99.99 %.
pub fn percentile_points(l: &Latency) -> Vec<(f64, f64)> {
    if l.len() == 0 {
        return Vec::new();
    }
    (0..=40)
        .map(|k| 1.0 - 0.5 * 10f64.powf(-f64::from(k) / 10.0))
        .map(|q| (q, l.ms(q)))
        .collect()
}

/// The server's quantiles from a `--json` `server` entry (`p50_ms` … `p99_9_ms`).
pub fn server_points(v: &Value) -> Vec<(f64, f64)> {
    [
        (0.5, "p50_ms"),
        (0.9, "p90_ms"),
        (0.99, "p99_ms"),
        (0.999, "p99_9_ms"),
    ]
    .iter()
    .filter_map(|(q, k)| Some((*q, v.get(*k)?.as_f64()?)))
    .collect()
}

const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}\
table{border-collapse:collapse}th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}\
figure{margin:1.5em 0}figcaption{font-weight:bold;margin-bottom:.3em}svg.chart{width:100%;height:auto}\
svg text{font-size:11px;fill:#444}";

/// Marks each chart with the number of its shapes the browser laid out with a size.
const SCRIPT: &str = "for(const c of document.querySelectorAll('svg.chart')){let n=0;\
for(const s of c.querySelectorAll('.shape')){const b=s.getBBox();if(b.width>0||b.height>0)n++;}\
c.setAttribute('data-drawn',String(n));}";

/// The two axis lines.
fn frame() -> String {
    format!(
        r##"<line x1="{LEFT}" y1="0" x2="{LEFT}" y2="{0}" stroke="#888"/><line x1="{LEFT}" y1="{0}" x2="{W}" y2="{0}" stroke="#888"/>"##,
        H - BOTTOM
    )
}

/// The axis lines, and the y axis from 0 to `y_max` in four ticks.
fn axes(y_max: f64, unit: &str) -> String {
    let mut svg = frame();
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{} {unit}</text>"#,
            LEFT - 4.0,
            y_at(v, y_max) + 4.0,
            trim(v)
        );
    }
    svg
}

fn legend(svg: &mut String, i: usize, name: &str, colour: &str) {
    let y = 14.0 + 16.0 * i as f64;
    let _ = write!(
        svg,
        r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        LEFT + 12.0,
        y - 4.0,
        LEFT + 30.0,
        y,
        escape(name)
    );
}

/// The y coordinate of `v` on an axis from 0 to `y_max`.
fn y_at(v: f64, y_max: f64) -> f64 {
    (H - BOTTOM) * (1.0 - (v / y_max).clamp(0.0, 1.0))
}

/// A round number at or above the largest of `values` (1, 2 or 5 times a power of ten).
fn nice_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    if max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= max)
        .unwrap_or(10.0 * p)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn page() -> String {
        let mut l = Latency::default();
        for us in [80, 90, 100, 120, 150, 300, 900, 2500] {
            l.record(Duration::from_micros(us));
        }
        let server = serde_json::json!({"p50_ms": 0.03, "p90_ms": 0.07, "p99_ms": 0.2, "p99_9_ms": 0.4});
        let mut p = Page::new("trunksim calls <test>");
        p.row("granted", 8);
        p.percentiles(
            "Request to grant",
            &[
                ("end to end", percentile_points(&l)),
                ("server", server_points(&server)),
            ],
        );
        p.heat_map(
            "Calls in progress",
            "calls",
            &[(1, vec![0, 2, 5]), (2, vec![1, 1, 0])],
            0.5,
        );
        p.bars("P(wait)", &[("measured", 0.016), ("Erlang C", 0.015)]);
        p.render()
    }

    #[test]
    fn the_page_has_each_chart_and_nothing_from_the_network() {
        let html = page();
        assert_eq!(html.matches(r#"<svg class="chart""#).count(), 3);
        assert!(html.contains("trunksim calls &lt;test&gt;"), "titles are escaped");
        for outside in ["http://", "https://", "src=", "href="] {
            assert!(!html.contains(outside), "{outside} in the page");
        }
        // 2 lines, 6 cells, 2 bars.
        assert_eq!(html.matches(r#"class="shape""#).count(), 10);
    }

    #[test]
    fn percentile_points_run_from_the_median_to_the_tail() {
        let mut l = Latency::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let pts = percentile_points(&l);
        assert_eq!(pts.first().map(|p| p.0), Some(0.5));
        assert!(
            pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{pts:?}"
        );
        assert!((pts[0].1 - 50.0).abs() < 0.1 && (pts.last().unwrap().1 - 100.0).abs() < 0.1);
        assert!(percentile_points(&Latency::default()).is_empty());
        assert_eq!(nice_max([0.0, 3.2].into_iter()), 5.0);
        assert_eq!(nice_max(std::iter::empty()), 1.0);
    }

    /// Headless Chromium lays the page out: each chart has shapes with a size. Skipped
    /// (said on stderr) when no Chromium is found, unless `REQUIRE_CHROMIUM` is
    /// set, as `.ci/run` does after installing it.
    #[test]
    fn chromium_draws_every_chart() {
        let Some(chromium) = chromium() else {
            assert!(
                std::env::var_os("REQUIRE_CHROMIUM").is_none(),
                "REQUIRE_CHROMIUM is set and no chromium was found"
            );
            eprintln!("Chromium skipped: no chromium or chromium-browser on PATH (CHROMIUM names another)");
            return;
        };
        let dir = std::env::temp_dir().join(format!("trunksim-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("report.html");
        std::fs::write(&file, page()).unwrap();
        let out = std::process::Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", file.display()))
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&out.stdout);
        let drawn: Vec<u32> = dom
            .split("data-drawn=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(
            drawn,
            vec![2, 6, 2],
            "shapes laid out per chart; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn chromium() -> Option<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("CHROMIUM") {
            return Some(p.into());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
            .find(|p| p.is_file())
    }
}
