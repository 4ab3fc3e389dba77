//! The benchmark's chart, drawn by gnuplot (Debian package `gnuplot-nox`): committed events/s over time during
//! the drain (top) and lag over time (bottom: during the drain the age of the oldest uncommitted message, then in
//! the steady phase publish → visible of each probe), one line per run, ours in blue, the reference in red.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::ingester::Kind;
use super::{Report, data_dir};

/// Committed events/s over a sliding window of about one second.
fn rate(series: &[(f64, f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for i in 0..series.len() {
        while series[i].0 - series[j].0 > 1.0 {
            j += 1;
        }
        if i > j {
            out.push((series[i].0, (series[i].1 - series[j].1) / (series[i].0 - series[j].0)));
        }
    }
    out
}

pub fn draw(report: &Report, out: &Path) -> Result<PathBuf> {
    let dir = data_dir(out);
    std::fs::create_dir_all(&dir)?;
    let mut rates = Vec::new();
    let mut lags = Vec::new();
    for r in &report.runs {
        let tag = format!("{}-{}", r.ingester.name(), r.index);
        let color = if r.ingester == Kind::Ours { "#1f63c6" } else { "#d23c2a" };
        let mut data = String::new();
        for (t, v) in rate(&r.drain.series) {
            writeln!(data, "{t:.3} {v:.1}")?;
        }
        let f = dir.join(format!("rate-{tag}.dat"));
        std::fs::write(&f, data)?;
        rates.push(format!("'{}' using 1:2 with lines lw 2 lc rgb '{color}' title '{tag}'", f.display()));
        let mut data = String::new();
        for (t, _, lag) in &r.drain.series {
            writeln!(data, "{t:.3} {lag:.3}")?;
        }
        if let Some(s) = &r.steady {
            data.push('\n');
            for (t, lag) in &s.series {
                writeln!(data, "{:.3} {lag:.3}", t + r.drain.seconds)?;
            }
        }
        let f = dir.join(format!("lag-{tag}.dat"));
        std::fs::write(&f, data)?;
        lags.push(format!(
            "'{}' using 1:2 with linespoints lw 1 pt 7 ps 0.3 lc rgb '{color}' title '{tag}'",
            f.display()
        ));
    }
    let png = out.join("bench.png");
    let title = format!(
        "{} profile, {} events, {} partition(s) — {}",
        report.profile.name(),
        report.events,
        report.partitions,
        report.machine.replace('\'', "")
    );
    let script = format!(
        "set terminal pngcairo size 1200,900 font 'DejaVu Sans,10'\nset output '{}'\nset multiplot layout 2,1 title '{}'\n\
         set grid\nset key outside right\nset xlabel 'seconds since the ingester started'\nset ylabel 'events committed / s'\n\
         plot {}\nset ylabel 'lag (s): oldest uncommitted message, then publish → visible'\nset logscale y\nplot {}\nunset multiplot\n",
        png.display(),
        title,
        rates.join(", "),
        lags.join(", ")
    );
    let gp = dir.join("bench.gp");
    std::fs::write(&gp, &script)?;
    let out = Command::new("gnuplot").arg(&gp).output().context("running gnuplot (apt-get install gnuplot-nox)")?;
    if !out.status.success() {
        bail!("gnuplot failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(png)
}
