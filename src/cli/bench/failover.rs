//! `raftmq bench failover`: producers send steadily (window 1, rotating to the next endpoint on a
//! failure) while the leader is killed and restarted `--trials` times. Per trial: the time from the
//! kill to the first successful send that was *started* after the kill.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;

use super::FailoverArgs;
use super::report::{Line, median, round2, round3};
use crate::cli::client::{self, request};
use crate::v2::{Code, SendMessageRequest};

#[derive(Default)]
struct Watch {
    kill: Option<Instant>,
    first_success: Option<Instant>,
}

struct Shared {
    watch: Mutex<Watch>,
    hist: Mutex<hdrhistogram::Histogram<u64>>,
    acked: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

async fn producer(i: usize, endpoints: Vec<String>, args: Arc<(String, usize, Duration)>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let (topic, size, timeout) = (&args.0, args.1, args.2);
    let mut clients = Vec::new();
    for e in &endpoints {
        clients.push(client::messaging(super::channel_to(e)?));
    }
    let factory = super::MessageFactory::new(topic, size, i);
    let client_id = client::new_client_id();
    let mut current = i % clients.len();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        let mut req = request(&client_id, SendMessageRequest { messages: factory.batch(seq, 1) });
        req.set_timeout(timeout);
        seq += 1;
        let t0 = Instant::now();
        let ok = match clients[current].send_message(req).await {
            Ok(response) => response.into_inner().status.is_some_and(|s| s.code == Code::Ok as i32),
            Err(_) => false,
        };
        let t1 = Instant::now();
        if ok {
            shared.acked.fetch_add(1, Ordering::Relaxed);
            shared.hist.lock().saturating_record((t1 - t0).as_micros().max(1) as u64);
            let mut w = shared.watch.lock();
            if let Some(kill) = w.kill {
                if t0 >= kill && w.first_success.is_none() {
                    w.first_success = Some(t1);
                }
            }
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            current = (current + 1) % clients.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Waits until every node answers, one leads, and the others follow; returns the leader's id.
async fn wait_healthy(endpoint: &str, replicas: u32, limit: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match super::cluster_status(endpoint).await {
            Ok(nodes) => {
                let leaders: Vec<u64> = nodes.iter().filter(|n| n.role == "leader").map(|n| n.id).collect();
                let followers = nodes.iter().filter(|n| n.role == "follower").count();
                if leaders.len() == 1 && followers + 1 >= replicas as usize {
                    return Ok(leaders[0]);
                }
                nodes.iter().map(|n| format!("{}={}", n.id, n.role)).collect::<Vec<_>>().join(",")
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("the group did not become healthy within {limit:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shell(template: &str, id: u64) -> anyhow::Result<()> {
    let command = template.replace("{id}", &id.to_string());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(())
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let settle = crate::cli::parse_duration(&args.settle)?;
    let send_timeout = crate::cli::parse_duration(&args.send_timeout)?;
    let trial_timeout = crate::cli::parse_duration(&args.trial_timeout)?;
    if args.producers == 0 || args.trials == 0 {
        bail!("--producers and --trials must be > 0");
    }
    let endpoints = client::parse_endpoints(&args.common.endpoint)?;
    if args.create_topic {
        super::create_topic(&args.common.endpoint, &args.common.topic, args.queues).await?;
    }
    wait_healthy(&args.common.endpoint, args.common.replicas, Duration::from_secs(60)).await?;
    let shared = Arc::new(Shared {
        watch: Mutex::new(Watch::default()),
        hist: Mutex::new(super::new_histogram()),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let producer_args = Arc::new((args.common.topic.clone(), args.size, send_timeout));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.producers {
        tasks.push(tokio::spawn(producer(i, endpoints.clone(), producer_args.clone(), shared.clone())));
    }
    let mut trials = Vec::new();
    let mut recoveries = Vec::new();
    let mut failed_trials = 0;
    for trial in 1..=args.trials {
        let leader = match wait_healthy(&args.common.endpoint, args.common.replicas, Duration::from_secs(60)).await {
            Ok(id) => id,
            Err(e) => {
                eprintln!("[bench] trial {trial}: {e:#}");
                failed_trials += 1;
                break;
            }
        };
        tokio::time::sleep(settle).await;
        *shared.watch.lock() = Watch::default();
        let before = shared.acked.load(Ordering::Relaxed);
        // The clock starts when the kill command has returned (the process is gone then): a send
        // started while the command was still being spawned could be served by the old leader.
        let kill_started = Instant::now();
        if let Err(e) = shell(&args.kill_cmd, leader).await {
            eprintln!("[bench] trial {trial}: kill: {e:#}");
        }
        let kill_at = Instant::now();
        shared.watch.lock().kill = Some(kill_at);
        let kill_cmd_ms = (kill_at - kill_started).as_secs_f64() * 1000.0;
        let deadline = kill_at + trial_timeout;
        let recovered = loop {
            if let Some(t) = shared.watch.lock().first_success {
                break Some(t - kill_at);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let new_leader = super::cluster_status(&args.common.endpoint)
            .await
            .ok()
            .and_then(|nodes| nodes.iter().find(|n| n.role == "leader").map(|n| n.id))
            .unwrap_or(0);
        let ms = recovered.map(|d| d.as_secs_f64() * 1000.0);
        eprintln!(
            "[bench] trial {trial}: killed node {leader}, {} (new leader {new_leader}, {} sent before)",
            ms.map(|m| format!("first send after {m:.1} ms")).unwrap_or_else(|| "no send succeeded".into()),
            before
        );
        match ms {
            Some(m) => recoveries.push(m),
            None => failed_trials += 1,
        }
        trials.push(serde_json::json!({"trial": trial, "killed": leader, "new_leader": new_leader, "recovery_ms": ms.map(round2), "kill_cmd_ms": round2(kill_cmd_ms)}));
        if let Err(e) = shell(&args.restart_cmd, leader).await {
            eprintln!("[bench] trial {trial}: restart: {e:#}");
            failed_trials += 1;
            break;
        }
    }
    // Leave the group whole for whatever runs next.
    let healthy = wait_healthy(&args.common.endpoint, args.common.replicas, Duration::from_secs(60)).await;
    shared.stop.store(true, Ordering::Release);
    for t in tasks {
        t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let acked = shared.acked.load(Ordering::Relaxed);
    let hist = shared.hist.lock().clone();
    let max_ms = recoveries.iter().copied().fold(0.0, f64::max);
    let mut line = Line::new();
    line.put("system", args.common.system.clone())
        .put("replicas", args.common.replicas)
        .put("size", args.size as u64)
        .put("publishers", args.producers as u64)
        .put("window", 1)
        .put("messages", acked)
        .put("seconds", round3(seconds))
        .put("msgs_per_s", round2(acked as f64 / seconds))
        .put("mb_per_s", round2(acked as f64 * args.size as f64 / 1e6 / seconds))
        .latency("", &hist)
        .put("flush", args.common.flush_label.clone())
        .put("batch", 1)
        .put("mode", "failover")
        .put("trials", args.trials as u64)
        .put("failed_trials", failed_trials as u64)
        .put("recovery_ms", recoveries.iter().map(|m| round2(*m)).collect::<Vec<f64>>())
        .put("recovery_median_ms", round2(median(&recoveries)))
        .put("recovery_max_ms", round2(max_ms))
        .put("failed_sends", shared.failed.load(Ordering::Relaxed))
        .put("trial_details", trials)
        .put("note", args.common.note.clone());
    line.print();
    if failed_trials > 0 {
        bail!("{failed_trials} trials did not recover");
    }
    healthy.map(|_| ())
}
