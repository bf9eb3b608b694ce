//! raftmq-jepsen: run a fault-injection test against the compose cluster, or re-check a saved one.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use raftmq_jepsen::history::{FinalState, read_history, write_history};
use raftmq_jepsen::nemesis::NodeRef;
use raftmq_jepsen::run::{Config, NEMESES, run};
use raftmq_jepsen::{checker, report};

#[derive(Parser)]
#[command(name = "raftmq-jepsen", about = "Jepsen-style fault injection against the raftmq docker-compose cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a test against the running compose cluster (start it with `docker-compose up -d`).
    Run {
        /// Seconds of workload (faults are injected during it; then heal and drain).
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Comma-separated nemeses, taken in turn: kill,pause,partition,restart,wipe; "none" for none.
        #[arg(long, default_value = "kill,pause,partition,restart,wipe")]
        nemesis: String,
        /// Target sends per second over all producers.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Producers (each sends synchronously).
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Consumer workers (one consumer group, ReceiveMessage + AckMessage).
        #[arg(long, default_value_t = 4)]
        consumers: usize,
        /// Invisible duration of a receive, seconds (an unacked message comes back after it).
        #[arg(long, default_value_t = 10)]
        invisible: u64,
        /// Long-poll time of a receive, seconds.
        #[arg(long, default_value_t = 5)]
        long_poll: u64,
        /// Share of first deliveries left unacked, to exercise redelivery.
        #[arg(long, default_value_t = 0.01)]
        skip_ack: f64,
        /// Seconds the group may take to drain after the final heal.
        #[arg(long, default_value_t = 120)]
        drain: u64,
        #[arg(long, default_value_t = 4)]
        queues: u32,
        /// The nodes as id=service=endpoint, comma-separated.
        #[arg(long, default_value = "1=raftmq1=127.0.0.1:8081,2=raftmq2=127.0.0.1:8082,3=raftmq3=127.0.0.1:8083")]
        nodes: String,
        /// The compose command, with any -f/-p (default: `docker compose` if present, else docker-compose).
        #[arg(long)]
        compose: Option<String>,
        /// Quiet period between faults, seconds "min..max".
        #[arg(long, default_value = "3..6")]
        quiet: String,
        /// How long a fault lasts, seconds "min..max".
        #[arg(long, default_value = "4..8")]
        hold: String,
        /// Per-operation timeout in milliseconds (a timeout is indeterminate).
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Where history.jsonl, final.json, summary.txt, report.html go (default target/jepsen/<time>-<nemeses>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Re-checks a saved run (history.jsonl and final.json in DIR) and rewrites its report.
    Check { dir: PathBuf },
}

fn range(text: &str) -> anyhow::Result<(f64, f64)> {
    let (a, b) = text.split_once("..").unwrap_or((text, text));
    Ok((a.trim().parse().with_context(|| format!("bad range {text:?}"))?, b.trim().parse().with_context(|| format!("bad range {text:?}"))?))
}

fn default_compose() -> String {
    let plugin = std::process::Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if plugin { "docker compose".into() } else { "docker-compose".into() }
}

fn finish(dir: &PathBuf, title: &str, history: &[raftmq_jepsen::history::Op], fin: &FinalState) -> anyhow::Result<bool> {
    let analysis = checker::check(history, fin);
    let summary = report::summary(&analysis, title);
    std::fs::write(dir.join("summary.txt"), &summary)?;
    std::fs::write(dir.join("report.html"), report::html(&analysis, history, title))?;
    std::fs::write(dir.join("analysis.json"), serde_json::to_string_pretty(&analysis)?)?;
    print!("{summary}");
    println!("report: {}", dir.join("report.html").display());
    Ok(analysis.valid)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let valid = match cli.command {
        Command::Check { dir } => {
            let history = read_history(&dir.join("history.jsonl"))?;
            let fin: FinalState = serde_json::from_slice(&std::fs::read(dir.join("final.json"))?)?;
            let title = format!("raftmq-jepsen re-check of {}", dir.display());
            finish(&dir, &title, &history, &fin)?
        }
        Command::Run { time, nemesis, rate, concurrency, consumers, invisible, long_poll, skip_ack, drain, queues, nodes, compose, quiet, hold, timeout_ms, out } => {
            let nemeses: Vec<String> = nemesis.split(',').map(str::trim).filter(|n| !n.is_empty() && *n != "none").map(String::from).collect();
            for n in &nemeses {
                if !NEMESES.contains(&n.as_str()) {
                    bail!("unknown nemesis {n:?}; use a comma-separated list of {}", NEMESES.join(","));
                }
            }
            let nodes = nodes
                .split(',')
                .map(|n| {
                    let mut parts = n.splitn(3, '=');
                    match (parts.next().and_then(|i| i.parse().ok()), parts.next(), parts.next()) {
                        (Some(id), Some(service), Some(endpoint)) => Ok(NodeRef { id, service: service.into(), endpoint: endpoint.into() }),
                        _ => bail!("bad --nodes entry {n:?}; use id=service=host:port"),
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let label = if nemeses.is_empty() { "none".to_string() } else { nemeses.join("+") };
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let dir = out.unwrap_or_else(|| PathBuf::from(format!("target/jepsen/{stamp}-{label}")));
            std::fs::create_dir_all(&dir)?;
            let cfg = Config {
                time: Duration::from_secs(time),
                nemeses,
                rate,
                concurrency: concurrency.max(1),
                consumers,
                invisible: Duration::from_secs(invisible.max(1)),
                long_poll: Duration::from_secs(long_poll),
                skip_ack: skip_ack.clamp(0.0, 1.0),
                drain_timeout: Duration::from_secs(drain),
                queues,
                nodes,
                compose: compose.unwrap_or_else(default_compose),
                quiet: range(&quiet)?,
                hold: range(&hold)?,
                op_timeout: Duration::from_millis(timeout_ms),
                recover_timeout: Duration::from_secs(120),
            };
            let title = format!("raftmq-jepsen: {time}s, nemesis {label}, {rate} sends/s, {concurrency} producers, flush {}", std::env::var("RAFTMQ_FLUSH").unwrap_or_else(|_| "sync".into()));
            let (history, fin) = run(cfg, |line| eprintln!("[jepsen] {line}")).await?;
            write_history(&dir.join("history.jsonl"), &history)?;
            std::fs::write(dir.join("final.json"), serde_json::to_vec(&fin)?)?;
            finish(&dir, &title, &history, &fin)?
        }
    };
    if !valid {
        std::process::exit(1);
    }
    Ok(())
}
