//! The header of a run's report: the machine, PostgreSQL, the command, the timing and any
//! service environment overrides.

use crate::Options;

use super::SERVICE_ENV;

pub(super) fn machine_header(pg_version: &str, options: &Options) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or("?".to_owned(), |kib| format!("{:.1}", kib / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut header = vec![
        format!("## todo-bench run, {date}\n"),
        format!("- Machine: {cores} cores, {model}, {mem_gib} GiB RAM, Linux {}", kernel.trim()),
        format!("- PostgreSQL {pg_version} at 127.0.0.1 (the same machine)"),
        format!(
            "- Command: `cargo run --release -p todo-bench --{}{}`",
            if args.is_empty() { "" } else { " " },
            args.join(" ")
        ),
        format!(
            "- Each measurement: {:.1} s warm-up, {:.1} s window; {}",
            options.warmup.as_secs_f64(),
            options.window.as_secs_f64(),
            if options.compare.is_some() || options.baseline_levels.is_empty() {
                "no ceilings".to_owned()
            } else {
                format!(
                    "ceilings at {} in flight",
                    options.baseline_levels.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )
            }
        ),
    ];
    let overrides: Vec<String> =
        SERVICE_ENV.iter().filter_map(|v| std::env::var(v).ok().map(|value| format!("{v}={value}"))).collect();
    if !overrides.is_empty() {
        header.push(format!("- Service environment overrides: {}", overrides.join(" ")));
    }
    header
}
