//! The report's charts, drawn with plotters' SVG backend (text is left to the viewer's fonts):
//! latency percentiles over the run (`latency.svg`), and for a ramp, latency against the offered
//! load (`ramp.svg`), where the knee shows. Latency axes are logarithmic, in milliseconds.

use plotters::prelude::*;

use super::report::{Latency, Summary};

const SIZE: (u32, u32) = (960, 540);

/// The percentiles drawn, with their colours.
const LINES: [(&str, RGBColor); 4] = [
    ("p50", RGBColor(31, 119, 180)),
    ("p90", RGBColor(44, 160, 44)),
    ("p99", RGBColor(255, 127, 14)),
    ("p99.9", RGBColor(214, 39, 40)),
];

fn pick(l: &Latency, i: usize) -> u64 {
    [l.p50, l.p90, l.p99, l.p999][i]
}

fn ms(ns: u64) -> f64 {
    (ns.max(1) as f64) / 1e6
}

/// The y range (ms) around every latency in `values`, on whole decades.
fn y_range(values: impl Iterator<Item = u64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for v in values {
        lo = lo.min(ms(v));
        hi = hi.max(ms(v));
    }
    if hi == 0.0 {
        return (0.01, 1.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

/// Latency percentiles per second over the run; `None` when nothing was received.
pub fn latency_over_time(s: &Summary, title: &str) -> anyhow::Result<Option<String>> {
    let points: Vec<(f64, Latency)> = s
        .series
        .iter()
        .filter_map(|p| p.latency.map(|l| (p.t, l)))
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let x_max = points.last().map_or(1.0, |p| p.0).max(1.0);
    draw(
        title,
        "seconds since the start",
        "latency (ms, from the scheduled send time)",
        &points,
        x_max,
        false,
    )
    .map(Some)
}

/// Latency percentiles against the offered load of each step; `None` with fewer than two steps
/// with fixed rates and latencies.
pub fn latency_against_load(s: &Summary, title: &str) -> anyhow::Result<Option<String>> {
    let points: Vec<(f64, Latency)> = s
        .steps
        .iter()
        .filter_map(|st| Some((st.rate?, st.latency?)))
        .collect();
    if points.len() < 2 {
        return Ok(None);
    }
    let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    draw(
        title,
        "offered load (messages per second)",
        "latency (ms)",
        &points,
        x_max,
        true,
    )
    .map(Some)
}

/// One chart: the percentiles of `points` against their x values, on a log latency axis, with
/// a dot on every point when `markers`.
fn draw(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(f64, Latency)],
    x_max: f64,
    markers: bool,
) -> anyhow::Result<String> {
    let (y_lo, y_hi) = y_range(points.iter().flat_map(|(_, l)| [l.p50, l.p999]));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()
            .map_err(err)?;
        for (i, (name, color)) in LINES.iter().enumerate() {
            let line: Vec<(f64, f64)> = points.iter().map(|(x, l)| (*x, ms(pick(l, i)))).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], *color));
            if markers {
                chart
                    .draw_series(line.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
