//! Timelines as SVG, for people who would rather look than read: what the
//! doctor's `--svg` and the incident replay draw. See [`Chart`].
//!
//! Written by hand rather than with a plotting crate: an SVG timeline is a
//! few hundred lines of text, and the crates that draw one either lay out
//! text with a font library (plotters' `ttf`: `font-kit`, which links the
//! system's fontconfig) or need a font file shipped with the binary. This
//! costs no dependency and no build time, and the viewer's fonts do the
//! text.

use std::fmt::Write;

/// A timeline: panels stacked over one time axis, with shaded spans (the
/// phases of an incident) and numbered marks (alerts, listed under the
/// chart).
///
/// ```
/// use fusebox::watchdog::{Chart, Panel};
///
/// let memory = Panel::new("Redis memory (MiB)")
///     .series("used", vec![(0.0, 10.0), (30.0, 22.0), (60.0, 31.5)])
///     .rule(32.0 * 0.9, "90 %")
///     .rule(32.0, "maxmemory")
///     .y_max(34.0);
/// let svg = Chart::new("incident replay")
///     .panel(memory)
///     .span(0.0, 20.0, "healthy")
///     .span(20.0, 60.0, "filling")
///     .mark(41.0, "memory above 90 % of the limit")
///     .to_svg();
/// assert!(svg.starts_with("<svg") && svg.contains("maxmemory"));
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Chart {
    title: String,
    x_label: String,
    panels: Vec<Panel>,
    spans: Vec<(f64, f64, String)>,
    marks: Vec<(f64, String)>,
}

/// One panel of a [`Chart`]: series over time, and horizontal rules
/// (levels, limits) labelled at the right.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Panel {
    title: String,
    series: Vec<(String, Vec<(f64, f64)>)>,
    rules: Vec<(f64, String)>,
    y_max: Option<f64>,
}

impl Panel {
    /// A panel titled `title` (say the unit in it).
    pub fn new(title: impl Into<String>) -> Self {
        Panel {
            title: title.into(),
            ..Panel::default()
        }
    }

    /// A line through `points` (time, value); a value that is not finite
    /// breaks the line (no data).
    pub fn series(mut self, label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push((label.into(), points));
        self
    }

    /// A dashed horizontal rule at `y`, labelled.
    pub fn rule(mut self, y: f64, label: impl Into<String>) -> Self {
        self.rules.push((y, label.into()));
        self
    }

    /// The top of the y axis (values above are drawn at it). Defaults to
    /// the largest value or rule, with some room.
    pub fn y_max(mut self, y: f64) -> Self {
        self.y_max = Some(y);
        self
    }

    fn top(&self) -> f64 {
        if let Some(y) = self.y_max.filter(|y| y.is_finite() && *y > 0.0) {
            return y;
        }
        let values = self.series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1));
        let max = values
            .chain(self.rules.iter().map(|r| r.0))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        if max > 0.0 {
            max * 1.1
        } else {
            1.0
        }
    }
}

/// Series colours, in order.
const COLOURS: [&str; 5] = ["#1f6feb", "#d1242f", "#2da44e", "#8250df", "#bf8700"];
const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const PANEL: f64 = 130.0;
const GAP: f64 = 34.0;
const TOP: f64 = 88.0;

impl Chart {
    /// A chart titled `title`, over time in seconds.
    pub fn new(title: impl Into<String>) -> Self {
        Chart {
            title: title.into(),
            x_label: "seconds".into(),
            ..Chart::default()
        }
    }

    /// The time axis' label. Defaults to `seconds`.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// Adds a panel under the others.
    pub fn panel(mut self, panel: Panel) -> Self {
        self.panels.push(panel);
        self
    }

    /// Shades `from..to` across every panel, labelled at the top.
    pub fn span(mut self, from: f64, to: f64, label: impl Into<String>) -> Self {
        self.spans.push((from, to, label.into()));
        self
    }

    /// A numbered mark at `at` across every panel; `label` is listed under
    /// the chart.
    pub fn mark(mut self, at: f64, label: impl Into<String>) -> Self {
        self.marks.push((at, label.into()));
        self
    }

    /// The time range: everything drawn, from 0.
    fn x_range(&self) -> (f64, f64) {
        let xs = self
            .panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.1.iter().map(|p| p.0));
        let xs = xs
            .chain(self.spans.iter().flat_map(|s| [s.0, s.1]))
            .chain(self.marks.iter().map(|m| m.0));
        let (lo, hi) = xs
            .filter(|x| x.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
        match lo < hi {
            true => (lo.min(0.0), hi),
            false => (0.0, 1.0),
        }
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let (x0, x1) = self.x_range();
        let plot_w = WIDTH - LEFT - RIGHT;
        let x = |t: f64| LEFT + (t - x0) / (x1 - x0) * plot_w;
        let panels_h = self.panels.len().max(1) as f64 * (PANEL + GAP);
        let list_y = TOP + panels_h + 24.0;
        let height = list_y + 18.0 * self.marks.len() as f64 + 12.0;
        let mut s = String::with_capacity(16 * 1024);
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let _ = write!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
            esc(&self.title)
        );
        let bottom = TOP + panels_h - GAP;
        // Phases, shaded across every panel.
        for (i, (from, to, label)) in self.spans.iter().enumerate() {
            let fill = if i % 2 == 0 { "#f0f3f6" } else { "#e4e9ee" };
            let (a, b) = (x(*from), x(*to));
            let _ = write!(
                s,
                r#"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
                (b - a).max(0.0),
                bottom - TOP
            );
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#57606a">{}</text>"##,
                a + 3.0,
                TOP - 6.0 - 12.0 * (i % 2) as f64,
                esc(label)
            );
        }
        for (i, panel) in self.panels.iter().enumerate() {
            let top = TOP + i as f64 * (PANEL + GAP);
            self.draw_panel(&mut s, panel, top, &x);
        }
        // The time axis.
        for t in ticks(x0, x1, 10) {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a">{}</text>"##,
                x(t),
                bottom + 16.0,
                num(t)
            );
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#57606a">{}</text>"##,
            LEFT + plot_w,
            bottom + 30.0,
            esc(&self.x_label)
        );
        // Alerts, numbered, listed under the chart; badges over the
        // panels, one per bunch of marks too close to tell apart.
        let mut bunches: Vec<(f64, usize, usize)> = Vec::new();
        for (i, (at, label)) in self.marks.iter().enumerate() {
            let at_x = x(*at);
            match bunches.last_mut() {
                Some(b) if at_x - b.0 < 12.0 => b.2 = i,
                _ => bunches.push((at_x, i, i)),
            }
            let _ = write!(
                s,
                r##"<line x1="{at_x:.1}" x2="{at_x:.1}" y1="{TOP}" y2="{bottom:.1}" stroke="#cf222e" stroke-width="1" stroke-dasharray="3 3"/>"##
            );
            let _ = write!(
                s,
                r##"<text x="{LEFT}" y="{:.1}" fill="#24292f"><tspan fill="#cf222e" font-weight="bold">{}</tspan>  {} s — {}</text>"##,
                list_y + 18.0 * i as f64,
                i + 1,
                num(*at),
                esc(label)
            );
        }
        // Two rows of badges: the first that has room.
        let mut row_end = [f64::NEG_INFINITY; 2];
        for (at_x, first, last) in bunches {
            let text = match first == last {
                true => format!("{}", first + 1),
                false => format!("{}–{}", first + 1, last + 1),
            };
            let w = 8.0 + 6.0 * text.chars().count() as f64;
            let left = at_x - w / 2.0;
            let row = usize::from(left <= row_end[0] + 2.0 && left > row_end[1] + 2.0);
            row_end[row] = left + w;
            let cy = 40.0 + 16.0 * row as f64;
            let _ = write!(
                s,
                r##"<rect x="{left:.1}" y="{:.1}" width="{w:.1}" height="14" rx="7" fill="#cf222e"/><text x="{at_x:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#ffffff">{text}</text>"##,
                cy - 7.0,
                cy + 3.5
            );
        }
        s.push_str("</svg>\n");
        s
    }

    fn draw_panel(&self, s: &mut String, panel: &Panel, top: f64, x: &impl Fn(f64) -> f64) {
        let plot_w = WIDTH - LEFT - RIGHT;
        let y_max = panel.top();
        let y = |v: f64| top + PANEL - (v.clamp(0.0, y_max) / y_max) * PANEL;
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#8c959f"/>"##
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-weight="bold" fill="#24292f">{}</text>"##,
            LEFT + 4.0,
            top + 14.0,
            esc(&panel.title)
        );
        let end = LEFT + plot_w;
        for v in ticks(0.0, y_max, 4) {
            let (at, label) = (y(v), num(v));
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{end:.1}" y1="{at:.1}" y2="{at:.1}" stroke="#d0d7de" stroke-width="0.5"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#57606a">{label}</text>"##,
                LEFT - 6.0,
                at + 4.0,
            );
        }
        for (value, label) in &panel.rules {
            let (at, label) = (y(*value), esc(label));
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{end:.1}" y1="{at:.1}" y2="{at:.1}" stroke="#6e7781" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="#57606a">{label}</text>"##,
                end + 6.0,
                at + 4.0,
            );
        }
        for (i, (label, points)) in panel.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut d = String::new();
            let mut pen = false;
            for (t, v) in points {
                if !(t.is_finite() && v.is_finite()) {
                    pen = false;
                    continue;
                }
                let _ = write!(
                    d,
                    "{}{:.1} {:.1} ",
                    if pen { 'L' } else { 'M' },
                    x(*t),
                    y(*v)
                );
                pen = true;
            }
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.6"/>"#,
                d.trim_end()
            );
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">— {}</text>"#,
                LEFT + plot_w - 6.0 - 110.0 * i as f64,
                top + 14.0,
                esc(label)
            );
        }
    }
}

/// Round tick values in `lo..=hi`, about `n` of them.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut v = (lo / step).ceil() * step;
    while v <= hi + step * 1e-9 && out.len() < 64 {
        out.push(v);
        v += step;
    }
    out
}

/// A number as short as it reads well.
fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `text` safe inside an SVG element.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
