//! Faults injected from the host through the docker CLI on the compose cluster's containers:
//! SIGKILL (`docker kill -s KILL`), SIGSTOP-like pauses (`docker pause`, the cgroup freezer),
//! partitions (`docker network disconnect` / `connect` with the node's fixed address and service
//! alias), restarting every node, and wiping one node's volume (`compose rm -sf`, `docker volume
//! rm`, `compose up -d`).
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

#[derive(Clone, Debug)]
pub struct NodeRef {
    /// The Raft node id.
    pub id: u64,
    /// The compose service.
    pub service: String,
    /// The host-published client endpoint.
    pub endpoint: String,
}

#[derive(Clone, Debug)]
struct Attach {
    network: String,
    ip: String,
}

pub struct Docker {
    compose: Vec<String>,
    pub nodes: Vec<NodeRef>,
    /// Each service's network attachment, read while it was healthy (to reconnect it).
    attach: BTreeMap<String, Attach>,
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(Duration::from_secs(60), Command::new(program).args(args).kill_on_drop(true).output())
        .await
        .with_context(|| format!("{program} {} timed out", args.join(" ")))?
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Docker {
    /// `compose` is the compose command ("docker compose" or "docker-compose", with any `-f`/`-p`).
    pub async fn new(compose: &str, nodes: Vec<NodeRef>) -> anyhow::Result<Docker> {
        let mut d = Docker { compose: compose.split_whitespace().map(String::from).collect(), nodes, attach: BTreeMap::new() };
        for n in d.nodes.clone() {
            d.read_attach(&n.service).await?;
        }
        Ok(d)
    }

    async fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all: Vec<&str> = self.compose[1..].iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        run(&self.compose[0], &all).await
    }

    pub async fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.compose(&["ps", "-a", "-q", service]).await?;
        if id.is_empty() {
            bail!("service {service} has no container; is the compose cluster up?");
        }
        Ok(id.lines().next().unwrap_or_default().to_string())
    }

    async fn read_attach(&mut self, service: &str) -> anyhow::Result<()> {
        let c = self.container(service).await?;
        let text = run("docker", &["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}};{{end}}", &c]).await?;
        let first = text.split(';').find(|s| !s.trim().is_empty()).with_context(|| format!("{service} is on no network"))?;
        let (network, ip) = first.trim().split_once(' ').with_context(|| format!("cannot read {service}'s network from {text:?}"))?;
        self.attach.insert(service.to_string(), Attach { network: network.into(), ip: ip.into() });
        Ok(())
    }

    pub fn node(&self, id: u64) -> &NodeRef {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    pub async fn kill(&self, id: u64) -> anyhow::Result<()> {
        let c = self.container(&self.node(id).service).await?;
        run("docker", &["kill", "-s", "KILL", &c]).await.map(drop)
    }

    pub async fn start(&self, id: u64) -> anyhow::Result<()> {
        let c = self.container(&self.node(id).service).await?;
        run("docker", &["start", &c]).await.map(drop)
    }

    pub async fn pause(&self, id: u64) -> anyhow::Result<()> {
        let c = self.container(&self.node(id).service).await?;
        run("docker", &["pause", &c]).await.map(drop)
    }

    pub async fn unpause(&self, id: u64) -> anyhow::Result<()> {
        let c = self.container(&self.node(id).service).await?;
        run("docker", &["unpause", &c]).await.map(drop)
    }

    /// Cuts the node off the private network: it reaches no peer and no peer reaches it.
    pub async fn isolate(&self, id: u64) -> anyhow::Result<()> {
        let service = &self.node(id).service;
        let c = self.container(service).await?;
        let a = self.attach.get(service).context("unknown network attachment")?;
        run("docker", &["network", "disconnect", "-f", &a.network, &c]).await.map(drop)
    }

    /// Reattaches with the same address and the service name as alias.
    pub async fn reconnect(&self, id: u64) -> anyhow::Result<()> {
        let service = &self.node(id).service;
        let c = self.container(service).await?;
        let a = self.attach.get(service).context("unknown network attachment")?;
        run("docker", &["network", "connect", "--ip", &a.ip, "--alias", service, &a.network, &c]).await.map(drop)
    }

    /// Removes the node's container and its data volume; `recreate` brings it back empty.
    pub async fn wipe(&self, id: u64) -> anyhow::Result<String> {
        let service = self.node(id).service.clone();
        let c = self.container(&service).await?;
        let volumes = run("docker", &["inspect", "-f", "{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}", &c]).await?;
        self.compose(&["rm", "-s", "-f", &service]).await?;
        for v in volumes.split_whitespace() {
            run("docker", &["volume", "rm", v]).await?;
        }
        Ok(volumes)
    }

    pub async fn recreate(&mut self, id: u64) -> anyhow::Result<()> {
        let service = self.node(id).service.clone();
        self.compose(&["up", "-d", "--no-deps", &service]).await?;
        self.read_attach(&service).await
    }

    /// Undoes every fault, whatever state each node is in (errors of no-op steps are ignored).
    pub async fn heal_all(&mut self) {
        for n in self.nodes.clone() {
            if self.container(&n.service).await.is_err() {
                let _ = self.recreate(n.id).await;
            }
            let _ = self.unpause(n.id).await;
            let _ = self.reconnect(n.id).await;
            let _ = self.start(n.id).await;
        }
    }
}
