//! Ticks, escaping, broken lines, empty charts.

use super::*;

#[test]
fn ticks_are_round_and_cover_the_range() {
    assert_eq!(ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(ticks(0.0, 34.0, 4), [0.0, 10.0, 20.0, 30.0]);
    assert!(ticks(0.0, 0.0, 4).is_empty());
    assert!(ticks(0.0, f64::INFINITY, 4).is_empty());
    assert!(ticks(0.0, 1e300, 4).len() <= 64);
}

#[test]
fn text_is_escaped_and_no_data_breaks_the_line() {
    let svg = Chart::new("a <b> & \"c\"")
        .panel(Panel::new("p").series(
            "s",
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 2.0), (3.0, 3.0)],
        ))
        .mark(1.0, "x<y")
        .to_svg();
    assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
    assert!(svg.contains("x&lt;y"));
    assert!(!svg.contains("<b>"));
    // Two pieces of line: one move per piece.
    let path = svg.split("<path d=\"").nth(1).unwrap();
    let path = &path[..path.find('"').unwrap()];
    assert_eq!(path.matches('M').count(), 2, "{path}");
    assert_eq!(path.matches('L').count(), 1, "{path}");
}

#[test]
fn an_empty_chart_is_still_a_document() {
    let svg = Chart::new("nothing").to_svg();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    let flat = Chart::new("flat")
        .panel(Panel::new("zero").series("z", vec![(0.0, 0.0), (0.0, 0.0)]))
        .to_svg();
    assert!(!flat.contains("NaN") && !flat.contains("inf"));
}
