//! The benchmark's picture: one SVG with two bar charts over the same rows, requests per second
//! and CPU microseconds per request (each process's share stacked), drawn with plotters.

use std::path::Path;

use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;

/// One row as the chart shows it.
pub struct Bar {
    pub label: String,
    pub per_second: f64,
    /// (process, CPU us per request).
    pub cpu: Vec<(String, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes the chart to `path`.
pub fn draw(path: &Path, title: &str, bars: &[Bar]) -> Result<(), String> {
    let height = 120 + 34 * u32::try_from(bars.len()).unwrap_or(1);
    let root = SVGBackend::new(path, (1100, height * 2)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(height);
    throughput(&top, bars).map_err(|e| e.to_string())?;
    cpu(&bottom, bars).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Rows as bar segments on the y axis, first row at the top.
fn rows(bars: &[Bar]) -> SegmentedCoord<RangedCoordi32> {
    // The segmented range of 0..n has a segment for n too: stop one short.
    (0..i32::try_from(bars.len()).unwrap_or(1).saturating_sub(1)).into_segmented()
}

fn label(bars: &[Bar], y: &SegmentValue<i32>) -> String {
    let SegmentValue::CenterOf(y) = y else {
        return String::new();
    };
    // Drawn bottom-up: the first row goes on top.
    usize::try_from(*y)
        .ok()
        .and_then(|i| bars.len().checked_sub(i + 1))
        .and_then(|i| bars.get(i))
        .map(|b| b.label.clone())
        .unwrap_or_default()
}

/// The y segment of row `i` (first row at the top).
fn segment(bars: &[Bar], i: usize) -> (SegmentValue<i32>, SegmentValue<i32>) {
    let y = i32::try_from(bars.len() - 1 - i).unwrap_or(0);
    (SegmentValue::Exact(y), SegmentValue::Exact(y + 1))
}

/// The x axis's end: the largest value, unless one row dwarfs the others; then three times the
/// second largest (that row's bar is cut, its value written at the end).
fn axis_end(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let largest = sorted.last().copied().unwrap_or(1.0).max(1.0);
    let second = sorted.iter().rev().nth(1).copied().unwrap_or(largest);
    largest.min(3.0 * second).max(1.0) * 1.15
}

type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, SegmentedCoord<RangedCoordi32>>>;

/// One titled panel with a row per bar, its x axis running to `end`.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    end: f64,
    bars: &[Bar],
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0.0..end, rows(bars))?;
    chart
        .configure_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|y| label(bars, y))
        .disable_y_mesh()
        .draw()?;
    Ok(chart)
}

/// The number written after row `i`'s bar; a bar cut at the axis's end says so, inside the
/// chart where its number stays readable.
fn value_label(
    rows: usize,
    i: usize,
    text: String,
    value: f64,
    end: f64,
) -> Text<'static, (f64, SegmentValue<i32>), String> {
    let y = i32::try_from(rows - 1 - i).unwrap_or(0);
    let (text, at) = if value > end {
        (format!(" {text} (bar cut)"), end * 0.8)
    } else {
        (format!(" {text}"), value)
    };
    Text::new(
        text,
        (at, SegmentValue::CenterOf(y)),
        ("sans-serif", 12).into_font().color(&BLACK),
    )
}

fn throughput(area: &Area<'_>, bars: &[Bar]) -> Result<(), Box<dyn std::error::Error>> {
    let values: Vec<f64> = bars.iter().map(|b| b.per_second).collect();
    let end = axis_end(&values);
    let mut chart = panel(area, "requests per second", end, bars)?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let (y0, y1) = segment(bars, i);
        let mut bar = Rectangle::new(
            [(0.0, y0), (b.per_second.min(end), y1)],
            PALETTE[0].mix(0.8).filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        bar
    }))?;
    chart.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, b)| value_label(bars.len(), i, format!("{:.0}", b.per_second), b.per_second, end)),
    )?;
    Ok(())
}

fn cpu(area: &Area<'_>, bars: &[Bar]) -> Result<(), Box<dyn std::error::Error>> {
    let totals: Vec<f64> = bars
        .iter()
        .map(|b| b.cpu.iter().map(|(_, us)| us).sum())
        .collect();
    let end = axis_end(&totals);
    let mut chart = panel(area, "CPU microseconds per request, by process", end, bars)?;
    let mut names: Vec<&str> = Vec::new();
    for b in bars {
        for (name, _) in &b.cpu {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    for (n, name) in names.iter().enumerate() {
        let color = PALETTE[n % PALETTE.len()];
        let rects: Vec<Rectangle<(f64, SegmentValue<i32>)>> = bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let before: f64 = b
                    .cpu
                    .iter()
                    .take_while(|(p, _)| p != name)
                    .map(|(_, us)| us)
                    .sum();
                let (_, us) = b.cpu.iter().find(|(p, _)| p == name)?;
                let (y0, y1) = segment(bars, i);
                let mut bar = Rectangle::new(
                    [(before.min(end), y0), ((before + us).min(end), y1)],
                    color.mix(0.8).filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                Some(bar)
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.draw_series(
        totals
            .iter()
            .enumerate()
            .map(|(i, t)| value_label(bars.len(), i, format!("{t:.1}"), *t, end)),
    )?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
