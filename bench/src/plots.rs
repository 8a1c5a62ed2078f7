//! PNG plots of the suite's figures, drawn with plotters into an in-memory
//! bitmap. Text uses a font embedded in this binary (DejaVu Sans Mono,
//! `bench/assets/`), so a machine without fonts or fontconfig draws it too.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT: &str = "hoard-bench";
static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// Colours by series index: hoard first (blue), its baseline second.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// One named line or cloud of points, in the chart's units.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How a chart draws its series.
#[derive(Clone, Copy)]
pub enum Mark {
    /// Joined points: distributions, curves over a scale.
    Lines,
    /// Separate points: one sample each (lag per upload).
    Dots,
}

/// One chart: a title, the axes' descriptions and its series.
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    pub mark: Mark,
}

/// The points of a latency distribution (sorted microseconds) as a CDF:
/// (latency in ms, percent of requests at or under it), in steps of 0.5%
/// up to p99: the slowest 1% would stretch the axis over a few outliers
/// and flatten the part where the systems differ (p99 is in the tables).
pub fn cdf_ms(sorted_us: &[u32]) -> Vec<(f64, f64)> {
    if sorted_us.is_empty() {
        return Vec::new();
    }
    (0..=198)
        .map(|k| {
            let q = f64::from(k) / 200.0;
            let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
            (f64::from(sorted_us[i]) / 1000.0, q * 100.0)
        })
        .collect()
}

/// Writes `charts` to one PNG at `path`, in a grid of `columns`.
pub fn write_png(path: &Path, charts: &[Chart], columns: usize) -> Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, FONT_TTF)
        .map_err(|_| anyhow!("the embedded font is not a usable TTF"))?;
    let columns = columns.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(columns).max(1);
    let size = (560 * columns as u32, 400 * rows as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((rows, columns));
    for (chart, area) in charts.iter().zip(areas.iter()) {
        draw(area, chart)?;
    }
    root.present()?;
    Ok(())
}

/// The range that holds every value, widened when it is a single point.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

fn draw(area: &DrawingArea<BitMapBackend<'_>, Shift>, chart: &Chart) -> Result<()> {
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(points().map(|p| p.0));
    let (y0, y1) = range(points().map(|p| p.1));
    // Latencies and counts start at zero; a negative lag keeps its sign.
    let (x0, y0) = (x0.min(0.0), y0.min(0.0));
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1 * 1.02, y0..y1 * 1.05)?;
    c.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let drawn = match chart.mark {
            Mark::Lines => c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?,
            Mark::Dots => c.draw_series(
                s.points
                    .iter()
                    .map(|&p| Circle::new(p, 2, colour.mix(0.6).filled())),
            )?,
        };
        drawn.label(s.name.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(3))
        });
    }
    // Distributions rise to the upper left; samples over time stay low.
    let legend_at = match chart.mark {
        Mark::Lines => SeriesLabelPosition::LowerRight,
        Mark::Dots => SeriesLabelPosition::UpperRight,
    };
    c.configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}
