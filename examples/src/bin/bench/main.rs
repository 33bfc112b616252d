//! `bench`: the shop's performance instrument. In one run, on this machine, with one load
//! generator for every HTTP row (wrk) and h2load for direct gRPC, it measures a plain hyper
//! server, nginx `proxy_pass` to it, the gateway (anonymous and authenticated reads, order
//! creation), and each service straight over gRPC; for every row it prints requests per second,
//! p50/p99 latency and the CPU microseconds per request each process spent (utime + stime from
//! `/proc/<pid>/stat` over the requests served), and draws the table as an SVG chart.
//!
//! ```text
//! just bench                     # builds release binaries, runs this, writes docs/bench.svg
//! target/release/bench --bin-dir target/release --seconds 10 [--repeat 3] [--chart out.svg] [--rows gateway,grpc]
//! target/release/bench --bin-dir target/release --seconds 5 --catalogue 100000,1000000
//! ```
//!
//! `--catalogue` measures the catalogue at those sizes instead (see `catalogue.rs`).
//!
//! It asserts nothing; docs/benchmarks.md records the figures with machine and command.

mod catalogue;
mod chart;
mod load;
mod procs;
mod shop;

use std::path::PathBuf;
use std::time::Duration;

use load::{GrpcLoad, HttpLoad, Measured};
use procs::cpu_time;

struct Options {
    bin_dir: PathBuf,
    seconds: u64,
    /// Runs per row; the row reported is the one with the median CPU per request.
    repeat: usize,
    chart: Option<PathBuf>,
    /// Only rows whose name contains one of these.
    rows: Vec<String>,
    /// Catalogue sizes to measure instead of the request path.
    catalogue: Vec<u64>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        bin_dir: PathBuf::from("target/release"),
        seconds: 10,
        repeat: 1,
        chart: None,
        rows: Vec::new(),
        catalogue: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bin-dir" => o.bin_dir = PathBuf::from(value),
            "--seconds" => o.seconds = value.parse().map_err(|_| format!("--seconds: {value:?}"))?,
            "--chart" => o.chart = Some(PathBuf::from(value)),
            "--repeat" => o.repeat = value.parse().map_err(|_| format!("--repeat: {value:?}"))?,
            "--rows" => o.rows = value.split(',').map(str::to_owned).collect(),
            "--catalogue" => {
                o.catalogue = value
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .map_err(|_| format!("--catalogue: {n:?} is not a count"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

/// One measured row.
struct Row {
    name: String,
    measured: Measured,
    /// (process, CPU us per request).
    cpu: Vec<(String, f64)>,
}

/// How a row loads the shop.
enum Drive {
    Http(HttpLoad),
    Grpc(GrpcLoad),
}

/// Runs one row: the load, and the CPU time of `watched` (name, pids) over it.
fn measure(
    shop: &shop::Shop,
    name: &str,
    drive: &Drive,
    watched: &[(&str, Vec<u32>)],
    seconds: u64,
) -> Result<Row, String> {
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_time(*p)).sum::<Duration>();
    let drive_for = |secs: u64| match drive {
        Drive::Http(h) => load::wrk(&shop.dir.0, h, secs),
        Drive::Grpc(g) => load::h2load(&shop.dir.0, g, secs),
    };
    // One second of warm-up (connections made, caches filled), not measured.
    drive_for(1)?;
    let before: Vec<Duration> = watched.iter().map(|(_, pids)| cpu(pids)).collect();
    let measured = drive_for(seconds)?;
    let after: Vec<Duration> = watched.iter().map(|(_, pids)| cpu(pids)).collect();
    let requests = measured.requests as f64;
    let cpu = watched
        .iter()
        .zip(before.iter().zip(after))
        .map(|((n, _), (b, a))| ((*n).to_owned(), (a - *b).as_secs_f64() * 1e6 / requests.max(1.0)))
        .collect();
    Ok(Row {
        name: name.to_owned(),
        measured,
        cpu,
    })
}

fn total_cpu(r: &Row) -> f64 {
    r.cpu.iter().map(|(_, us)| us).sum()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0))
}

fn print_row(r: &Row) {
    let cpu: Vec<String> = r.cpu.iter().map(|(n, us)| format!("{n} {us:.1}")).collect();
    println!(
        "| {} | {:.0} | {} | {} | {} | {} |",
        r.name,
        r.measured.per_second(),
        ms(r.measured.p50),
        ms(r.measured.p99),
        r.measured.failures,
        cpu.join(" + ")
    );
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".to_owned(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1_048_576.0)
        });
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {mem}, {model}")
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    if !o.catalogue.is_empty() {
        println!("machine: {}", machine());
        return catalogue::run(&o.bin_dir, &o.catalogue, o.seconds);
    }
    let shop = shop::Shop::start(&o.bin_dir)?;
    println!(
        "machine: {}; load generator, proxies and services share these cores",
        machine()
    );
    let [g, u, p, r] = shop.idle_rss_mib;
    println!("idle RSS after start: gateway {g} MiB, user {u} MiB, product {p} MiB, order {r} MiB");
    println!(
        "RSS after setup (logins, one order): gateway {} MiB, user {} MiB, product {} MiB, order {} MiB",
        procs::rss_kib(shop.gateway.pid()) / 1024,
        procs::rss_kib(shop.user.pid()) / 1024,
        procs::rss_kib(shop.product.pid()) / 1024,
        procs::rss_kib(shop.order.pid()) / 1024
    );
    println!(
        "each row: {} s after 1 s of warm-up; CPU is utime + stime per request served",
        o.seconds
    );
    println!();
    println!("| path | req/s | p50 ms | p99 ms | failed | CPU us per request |");
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for planned in shop.rows() {
        if !o.rows.is_empty() && !o.rows.iter().any(|r| planned.name.contains(r.as_str())) {
            continue;
        }
        let mut runs = Vec::new();
        for _ in 0..o.repeat.max(1) {
            runs.push(measure(
                &shop,
                &planned.name,
                &planned.drive,
                &planned.watched,
                o.seconds,
            )?);
        }
        // The run with the median total CPU per request: one noisy run does not decide.
        runs.sort_by(|a, b| total_cpu(a).total_cmp(&total_cpu(b)));
        let row = runs.swap_remove(runs.len() / 2);
        print_row(&row);
        rows.push(row);
    }
    println!();
    println!(
        "RSS after the run: gateway {} MiB, user {} MiB, product {} MiB, order {} MiB",
        procs::rss_kib(shop.gateway.pid()) / 1024,
        procs::rss_kib(shop.user.pid()) / 1024,
        procs::rss_kib(shop.product.pid()) / 1024,
        procs::rss_kib(shop.order.pid()) / 1024
    );
    if let Some(path) = &o.chart {
        let bars: Vec<chart::Bar> = rows
            .iter()
            .map(|r| chart::Bar {
                label: r.name.clone(),
                per_second: r.measured.per_second(),
                cpu: r.cpu.clone(),
            })
            .collect();
        chart::draw(path, &format!("just bench on {}", machine()), &bars)?;
        println!();
        println!("chart: {}", path.display());
    }
    Ok(())
}
