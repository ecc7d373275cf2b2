//! Usage charts, drawn on the server as SVG: stacked bars of verifications per bucket, one
//! colour per outcome. No script draws them, so they show with scripts off, print, and need
//! nothing from a CDN.

use std::collections::BTreeMap;

use askama::Template;
use keyward_proto::UsageReport;
use time::OffsetDateTime;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const PLOT_LEFT: f64 = 48.0;
const PLOT_RIGHT: f64 = 712.0;
const PLOT_TOP: f64 = 12.0;
const PLOT_BOTTOM: f64 = 188.0;
/// Time labels under the bars, at most.
const TICKS: usize = 6;

/// How outcomes are grouped into the chart's series.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grouping {
    /// One series per verification code.
    ByOutcome,
    /// Valid against everything else.
    ValidOrNot,
}

impl Grouping {
    fn series(self, outcome: &str) -> &'static str {
        match self {
            Grouping::ValidOrNot if outcome == "VALID" => "Valid",
            Grouping::ValidOrNot => "Invalid",
            Grouping::ByOutcome => match outcome {
                "VALID" => "Valid",
                "RATE_LIMITED" => "Rate limited",
                "USAGE_EXCEEDED" => "Usage exceeded",
                "INSUFFICIENT_PERMISSIONS" => "Insufficient permissions",
                "TENANT_MISMATCH" => "Tenant mismatch",
                "KEY_REVOKED" => "Revoked",
                "KEY_EXPIRED" => "Expired",
                "KEY_DISABLED" => "Disabled",
                _ => "Invalid key",
            },
        }
    }
}

/// The colour class of a series (see `app.css`).
fn class_of(series: &str) -> &'static str {
    match series {
        "Valid" => "s-valid",
        "Rate limited" => "s-limited",
        "Usage exceeded" => "s-exceeded",
        "Insufficient permissions" | "Tenant mismatch" => "s-denied",
        "Revoked" | "Expired" | "Disabled" => "s-ended",
        _ => "s-invalid",
    }
}

/// Series are drawn bottom-up in this order.
const ORDER: [&str; 9] = [
    "Valid",
    "Rate limited",
    "Usage exceeded",
    "Insufficient permissions",
    "Tenant mismatch",
    "Revoked",
    "Expired",
    "Disabled",
    "Invalid key",
];

fn rank(series: &str) -> usize {
    ORDER
        .iter()
        .position(|name| *name == series)
        .unwrap_or(ORDER.len())
}

pub(crate) struct Segment {
    pub(crate) y: f64,
    pub(crate) height: f64,
    pub(crate) class: &'static str,
}

pub(crate) struct Bar {
    pub(crate) x: f64,
    pub(crate) width: f64,
    /// The bucket and its counts, as the bar's tooltip.
    pub(crate) title: String,
    pub(crate) segments: Vec<Segment>,
}

pub(crate) struct Tick {
    pub(crate) x: f64,
    pub(crate) label: String,
}

pub(crate) struct Series {
    pub(crate) name: &'static str,
    pub(crate) class: &'static str,
    pub(crate) total: i64,
}

/// A chart ready to draw.
#[derive(Template)]
#[template(path = "chart.svg", escape = "html")]
pub(crate) struct Chart {
    pub(crate) label: String,
    pub(crate) bars: Vec<Bar>,
    pub(crate) ticks: Vec<Tick>,
    pub(crate) series: Vec<Series>,
    pub(crate) max: i64,
    pub(crate) total: i64,
}

impl Chart {
    pub(crate) const WIDTH: f64 = WIDTH;
    pub(crate) const HEIGHT: f64 = HEIGHT;
    pub(crate) const PLOT_LEFT: f64 = PLOT_LEFT;
    pub(crate) const PLOT_RIGHT: f64 = PLOT_RIGHT;
    pub(crate) const PLOT_TOP: f64 = PLOT_TOP;
    pub(crate) const PLOT_BOTTOM: f64 = PLOT_BOTTOM;

    /// Draws `report`, with a bar for every bucket of its range, empty ones included.
    pub(crate) fn new(label: &str, report: &UsageReport, grouping: Grouping) -> Self {
        let step = match report.granularity.as_str() {
            "minute" => time::Duration::MINUTE,
            "day" => time::Duration::DAY,
            _ => time::Duration::HOUR,
        };
        let buckets = ((report.to - report.from).whole_seconds() / step.whole_seconds()).max(1);
        let slot = (PLOT_RIGHT - PLOT_LEFT) / buckets as f64;
        let counts: BTreeMap<OffsetDateTime, BTreeMap<&'static str, i64>> = report
            .data
            .iter()
            .map(|bucket| {
                let mut series = BTreeMap::new();
                for (outcome, count) in &bucket.outcomes {
                    *series.entry(grouping.series(outcome)).or_insert(0) += count;
                }
                (bucket.start, series)
            })
            .collect();
        let max = counts
            .values()
            .map(|series| series.values().sum::<i64>())
            .max()
            .unwrap_or(0)
            .max(1);
        let scale = (PLOT_BOTTOM - PLOT_TOP) / max as f64;
        let mut totals: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut bars = Vec::new();
        for index in 0..buckets {
            let start = report.from + step * index as i32;
            let Some(series) = counts.get(&start) else {
                continue;
            };
            let mut ordered: Vec<(&'static str, i64)> =
                series.iter().map(|(name, count)| (*name, *count)).collect();
            ordered.sort_by_key(|(name, _)| rank(name));
            let mut top = PLOT_BOTTOM;
            let mut segments = Vec::new();
            let mut title = format!("{}:", label_of(start, &report.granularity));
            for (name, count) in ordered {
                *totals.entry(name).or_insert(0) += count;
                let height = count as f64 * scale;
                top -= height;
                segments.push(Segment {
                    y: top,
                    height,
                    class: class_of(name),
                });
                title.push_str(&format!(" {count} {}", name.to_lowercase()));
            }
            bars.push(Bar {
                x: PLOT_LEFT + slot * index as f64 + slot * 0.1,
                width: (slot * 0.8).max(0.5),
                title,
                segments,
            });
        }
        // Labels fall on round times: every 10 minutes, 3 hours, 5 days…
        let every = tick_spacing(buckets, &report.granularity);
        let ticks = (0..buckets)
            .filter(|index| {
                let start = report.from + step * *index as i32;
                (start.unix_timestamp() / step.whole_seconds()) % every == 0
            })
            .map(|index| Tick {
                x: PLOT_LEFT + slot * index as f64 + slot / 2.0,
                label: label_of(report.from + step * index as i32, &report.granularity),
            })
            .collect();
        let mut series: Vec<Series> = totals
            .into_iter()
            .map(|(name, total)| Series {
                name,
                class: class_of(name),
                total,
            })
            .collect();
        series.sort_by_key(|series| rank(series.name));
        Self {
            label: label.to_owned(),
            total: series.iter().map(|series| series.total).sum(),
            bars,
            ticks,
            series,
            max,
        }
    }
}

/// Buckets between two time labels: the smallest round spacing that leaves at most
/// `TICKS` labels.
fn tick_spacing(buckets: i64, granularity: &str) -> i64 {
    let round: &[i64] = match granularity {
        "minute" => &[1, 2, 5, 10, 15, 30, 60, 120, 360, 720, 1440],
        "hour" => &[1, 2, 3, 6, 12, 24, 48, 168],
        _ => &[1, 2, 5, 7, 10, 15, 30, 60, 90, 180, 365],
    };
    round
        .iter()
        .copied()
        .find(|every| buckets / every < TICKS as i64)
        .unwrap_or_else(|| buckets / TICKS as i64 + 1)
}

/// A bucket's start as its axis shows it (UTC).
fn label_of(start: OffsetDateTime, granularity: &str) -> String {
    let utc = start.to_offset(time::UtcOffset::UTC);
    match granularity {
        "day" => format!("{:02}-{:02}", u8::from(utc.month()), utc.day()),
        _ => format!("{:02}:{:02}", utc.hour(), utc.minute()),
    }
}

#[cfg(test)]
mod tests {
    use keyward_proto::UsageBucket;
    use time::macros::datetime;

    use super::*;

    fn report(data: Vec<UsageBucket>) -> UsageReport {
        UsageReport {
            granularity: "minute".to_owned(),
            from: datetime!(2026-11-29 10:00 UTC),
            to: datetime!(2026-11-29 10:10 UTC),
            total: data.iter().map(|bucket| bucket.total).sum(),
            outcomes: BTreeMap::new(),
            data,
        }
    }

    fn bucket(minute: u8, outcomes: &[(&str, i64)]) -> UsageBucket {
        UsageBucket {
            start: datetime!(2026-11-29 10:00 UTC)
                .replace_minute(minute)
                .unwrap(),
            total: outcomes.iter().map(|(_, count)| count).sum(),
            outcomes: outcomes
                .iter()
                .map(|(outcome, count)| ((*outcome).to_owned(), *count))
                .collect(),
        }
    }

    #[test]
    fn bars_stack_by_outcome_and_scale_to_the_busiest_bucket() {
        let chart = Chart::new(
            "test",
            &report(vec![
                bucket(1, &[("VALID", 6), ("RATE_LIMITED", 2)]),
                bucket(5, &[("INVALID_KEY", 4)]),
            ]),
            Grouping::ByOutcome,
        );
        assert_eq!(chart.max, 8);
        assert_eq!(chart.total, 12);
        assert_eq!(chart.bars.len(), 2);
        let first = &chart.bars[0];
        assert_eq!(first.segments[0].class, "s-valid");
        assert_eq!(first.segments[1].class, "s-limited");
        // The busiest bucket fills the plot exactly.
        let stacked: f64 = first.segments.iter().map(|segment| segment.height).sum();
        assert!((stacked - (PLOT_BOTTOM - PLOT_TOP)).abs() < 1e-9);
        assert_eq!(first.title, "10:01: 6 valid 2 rate limited");
        // The bucket at minute 5 sits in the sixth of ten slots.
        let slot = (PLOT_RIGHT - PLOT_LEFT) / 10.0;
        assert!((chart.bars[1].x - (PLOT_LEFT + slot * 5.1)).abs() < 1e-9);
        let names: Vec<_> = chart.series.iter().map(|series| series.name).collect();
        assert_eq!(names, ["Valid", "Rate limited", "Invalid key"]);
    }

    #[test]
    fn valid_or_not_groups_every_refusal_together() {
        let chart = Chart::new(
            "test",
            &report(vec![bucket(
                0,
                &[("VALID", 1), ("KEY_REVOKED", 2), ("RATE_LIMITED", 3)],
            )]),
            Grouping::ValidOrNot,
        );
        let totals: Vec<_> = chart
            .series
            .iter()
            .map(|series| (series.name, series.total))
            .collect();
        assert_eq!(totals, [("Valid", 1), ("Invalid", 5)]);
    }

    #[test]
    fn an_empty_report_draws_axes_and_no_bars() {
        let chart = Chart::new("test", &report(Vec::new()), Grouping::ByOutcome);
        assert!(chart.bars.is_empty());
        assert_eq!(chart.total, 0);
        // Ten minutes get a label every two minutes, on even minutes.
        let labels: Vec<_> = chart.ticks.iter().map(|tick| tick.label.as_str()).collect();
        assert_eq!(labels, ["10:00", "10:02", "10:04", "10:06", "10:08"]);
        let svg = chart.render().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
    }
}

#[cfg(test)]
mod spacing {
    use super::tick_spacing;

    #[test]
    fn labels_are_spaced_by_round_amounts() {
        assert_eq!(tick_spacing(61, "minute"), 15);
        assert_eq!(tick_spacing(25, "hour"), 6);
        assert_eq!(tick_spacing(31, "day"), 7);
        assert_eq!(tick_spacing(3, "day"), 1);
    }
}
