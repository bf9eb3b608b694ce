//! The `raftmq` binary's error paths, run as a real process: a mistake exits non-zero, stderr says
//! what to fix, and nothing is left half-done (no data dir, no listening port, no live process).
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_raftmq");

/// A loopback address whose port was free a moment ago.
fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// Three nodes' peer addresses and the matching --peers value.
fn three_peers() -> (Vec<String>, String) {
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    (addrs, peers)
}

/// A test's scratch directory: the process runs in `work` (so a default `raftmq-data` would land
/// there) and its stdout/stderr go to files next to it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        Scratch { dir }
    }
    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `raftmq ARGS` with no RAFTMQ_* variable inherited from the test's environment.
    fn command(&self, args: &[&str], name: &str) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).current_dir(self.work()).env("NO_COLOR", "1").stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RAFTMQ_") {
                command.env_remove(key);
            }
        }
        command.stdout(std::fs::File::create(self.path(&format!("{name}.out"))).unwrap());
        command.stderr(std::fs::File::create(self.path(&format!("{name}.err"))).unwrap());
        command
    }
    fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.err"))).unwrap()
    }
    /// True if the process left nothing behind in its working directory.
    fn work_is_empty(&self) -> bool {
        std::fs::read_dir(self.work()).unwrap().next().is_none()
    }
}

/// A spawned process, killed when dropped.
struct Running(Child);

impl Running {
    /// Waits up to `limit` for the process to exit; None if it is still running.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(mut command: Command) -> Running {
    Running(command.spawn().expect("spawn raftmq"))
}

/// Runs a command that must fail; returns its stderr.
fn fails(scratch: &Scratch, command: Command, name: &str) -> String {
    let mut child = spawn(command);
    let status = child.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("{name}: still running after 30 s; stderr:\n{}", scratch.stderr(name))
    });
    let stderr = scratch.stderr(name);
    assert!(!status.success(), "{name}: exited 0; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{name}: panicked:\n{stderr}");
    stderr
}

fn assert_mentions(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(stderr.contains(needle), "stderr does not mention {needle:?}:\n{stderr}");
    }
}

/// Runs `raftmq server ARGS`, which must fail before creating anything; returns its stderr.
fn server_fails(args: &[&str]) -> String {
    let scratch = Scratch::new();
    let mut all = vec!["server"];
    all.extend_from_slice(args);
    let stderr = fails(&scratch, scratch.command(&all, "server"), "server");
    assert!(scratch.work_is_empty(), "a failed start left files in its working dir: {:?}", std::fs::read_dir(scratch.work()).unwrap().collect::<Vec<_>>());
    stderr
}

/// Waits until `path` exists.
fn wait_for_file(path: &Path, child: &mut Running, stderr: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Some(status) = child.wait_exit(Duration::ZERO) {
            panic!("server exited ({status}) before writing {}:\n{}", path.display(), stderr());
        }
        assert!(Instant::now() < deadline, "{} not written within 30 s:\n{}", path.display(), stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts connections on `addr`, and checks the server is still up a second later.
fn assert_serving(child: &mut Running, addr: &str, stderr: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.wait_exit(Duration::ZERO) {
            panic!("server exited ({status}) instead of starting:\n{}", stderr());
        }
        assert!(Instant::now() < deadline, "server not listening on {addr} within 30 s:\n{}", stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait_exit(Duration::from_secs(1)).is_none(), "server exited within a second of starting:\n{}", stderr());
}

fn read_node_json(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("node.json")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// server: configuration mistakes

// Goal: each required server setting that is missing is named, with the flag, TOML key and env variable to set it.
#[test]
fn server_names_each_missing_required_setting() {
    let (_, peers) = three_peers();
    let listen = free_addr();
    let stderr = server_fails(&["--listen", &listen, "--peers", &peers]);
    assert_mentions(&stderr, &["--node-id is required", "RAFTMQ_NODE_ID"]);
    let stderr = server_fails(&["--node-id", "1", "--peers", &peers]);
    assert_mentions(&stderr, &["--listen is required", "RAFTMQ_LISTEN"]);
    let stderr = server_fails(&["--node-id", "1", "--listen", &listen]);
    assert_mentions(&stderr, &["--peers is required", "RAFTMQ_PEERS"]);
}

// Goal: a malformed --peers entry is quoted back with the shape it should have.
#[test]
fn server_rejects_malformed_peers() {
    let listen = free_addr();
    let stderr = server_fails(&["--node-id", "1", "--listen", &listen, "--peers", "1"]);
    assert_mentions(&stderr, &["peer \"1\" is not id=host:port", "1=127.0.0.1:9091"]);
    let stderr = server_fails(&["--node-id", "1", "--listen", &listen, "--peers", "x=h:1"]);
    assert_mentions(&stderr, &["peer id \"x\" is not a number"]);
    let stderr = server_fails(&["--node-id", "1", "--listen", &listen, "--peers", "1=h"]);
    assert_mentions(&stderr, &["peer address \"h\" is not host:port"]);
}

// Goal: a malformed --routers list (flag or env) is refused before anything starts, quoting the bad entry.
#[test]
fn server_rejects_malformed_routers() {
    let (_, peers) = three_peers();
    for (routers, says) in [
        ("router-without-port", "router address \"router-without-port\" is not host:port"),
        ("r:8080,r:8080", "router r:8080 is listed twice"),
        (",", "--routers lists no routers"),
    ] {
        let stderr = server_fails(&["--node-id", "1", "--listen", "127.0.0.1:1", "--peers", &peers, "--routers", routers]);
        assert_mentions(&stderr, &[says]);
    }
}

// Goal: a node id that --peers does not list is refused, naming the id and both ways to fix it.
#[test]
fn server_rejects_node_id_missing_from_peers() {
    let (_, peers) = three_peers();
    let stderr = server_fails(&["--node-id", "4", "--listen", &free_addr(), "--peers", &peers]);
    assert_mentions(&stderr, &["--peers does not list this node's id 4", "4=host:port", "--node-id"]);
}

// Goal: when this node's --peers address is a host name, the missing --peer-listen is asked for, saying why.
#[test]
fn server_asks_for_peer_listen_when_peer_address_is_a_name() {
    let stderr = server_fails(&["--node-id", "1", "--listen", &free_addr(), "--peers", "1=localhost:9091,2=localhost:9092"]);
    assert_mentions(&stderr, &["--peer-listen is required", "\"localhost:9091\"", "not an ip:port"]);
}

// Goal: an unknown --flush policy is refused, listing the policies that exist.
#[test]
fn server_rejects_bogus_flush() {
    let (_, peers) = three_peers();
    let stderr = server_fails(&["--node-id", "1", "--listen", &free_addr(), "--peers", &peers, "--flush", "bogus"]);
    assert_mentions(&stderr, &["--flush", "bogus", "sync", "async"]);
}

// Goal: --max-body-bytes of 0 or above 16 MiB is refused with the allowed range.
#[test]
fn server_rejects_max_body_bytes_out_of_range() {
    let (_, peers) = three_peers();
    let listen = free_addr();
    for bad in ["0", &(16 * 1024 * 1024 + 1).to_string()] {
        let stderr = server_fails(&["--node-id", "1", "--listen", &listen, "--peers", &peers, "--max-body-bytes", bad]);
        assert_mentions(&stderr, &[&format!("--max-body-bytes {bad}"), "1 to 16777216"]);
    }
}

// Goal: a --segment-size-bytes too small for a maximal batch is refused with the minimum.
#[test]
fn server_rejects_tiny_segment_size() {
    let (_, peers) = three_peers();
    let stderr = server_fails(&["--node-id", "1", "--listen", &free_addr(), "--peers", &peers, "--segment-size-bytes", "4096"]);
    assert_mentions(&stderr, &["--segment-size-bytes 4096 is too small", "at least"]);
}

// Goal: a misspelt key in the TOML file is refused, naming the file, the key and the keys that exist.
#[test]
fn server_rejects_unknown_toml_key() {
    let scratch = Scratch::new();
    let file = scratch.path("raftmq.toml");
    let (_, peers) = three_peers();
    std::fs::write(&file, format!("node-idd = 1\nlisten = \"{}\"\npeers = \"{peers}\"\n", free_addr())).unwrap();
    let stderr = server_fails(&["--config", file.to_str().unwrap()]);
    assert_mentions(&stderr, &[file.to_str().unwrap(), "unknown field `node-idd`", "node-id"]);
}

// Goal: a --config file that does not exist is reported by path, not silently ignored.
#[test]
fn server_rejects_missing_toml_file() {
    let scratch = Scratch::new();
    let file = scratch.path("no-such.toml");
    let (_, peers) = three_peers();
    let stderr = server_fails(&["--node-id", "1", "--listen", &free_addr(), "--peers", &peers, "--config", file.to_str().unwrap()]);
    assert_mentions(&stderr, &["cannot read config file", file.to_str().unwrap(), "No such file"]);
}

// Goal: a server configured only through RAFTMQ_* variables starts, and uses the env node id.
#[test]
fn server_starts_from_env_alone() {
    let scratch = Scratch::new();
    let (_, peers) = three_peers();
    let listen = free_addr();
    let data_dir = scratch.path("node-2");
    let mut command = scratch.command(&["server"], "server");
    command
        .env("RAFTMQ_NODE_ID", "2")
        .env("RAFTMQ_GROUP", "genv")
        .env("RAFTMQ_LISTEN", &listen)
        .env("RAFTMQ_PEERS", &peers)
        .env("RAFTMQ_DATA_DIR", &data_dir)
        .env("RAFTMQ_FLUSH", "async");
    let mut server = spawn(command);
    assert_serving(&mut server, &listen, || scratch.stderr("server"));
    server.kill();
    let identity = read_node_json(&data_dir);
    assert!(identity.contains("\"node_id\":2") && identity.contains("\"genv\""), "node.json: {identity}");
}

// Goal: a flag beats its env variable (even an invalid one), and a bad env value alone is traced to the variable.
#[test]
fn server_flag_wins_over_env() {
    let scratch = Scratch::new();
    let (_, peers) = three_peers();
    let listen = free_addr();
    let data_dir = scratch.path("node-1");
    let args = ["server", "--node-id", "1", "--listen", &listen, "--peers", &peers, "--data-dir", data_dir.to_str().unwrap()];
    let mut command = scratch.command(&args, "flag");
    command.env("RAFTMQ_NODE_ID", "abc");
    let mut server = spawn(command);
    assert_serving(&mut server, &listen, || scratch.stderr("flag"));
    server.kill();
    assert!(read_node_json(&data_dir).contains("\"node_id\":1"));

    let mut command = scratch.command(&["server", "--listen", &listen, "--peers", &peers], "env");
    command.env("RAFTMQ_NODE_ID", "abc");
    let stderr = fails(&scratch, command, "env");
    assert_mentions(&stderr, &["'abc'", "--node-id", "RAFTMQ_NODE_ID"]);
    assert!(scratch.work_is_empty());
}

// ---------------------------------------------------------------------------------------------
// server: busy ports

// Goal: a client port already in use is reported with its address, before any data dir is created.
#[test]
fn server_reports_busy_client_port() {
    let scratch = Scratch::new();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let (_, peers) = three_peers();
    let data_dir = scratch.path("node-1");
    let args = ["server", "--node-id", "1", "--listen", &listen, "--peers", &peers, "--data-dir", data_dir.to_str().unwrap()];
    let stderr = fails(&scratch, scratch.command(&args, "server"), "server");
    assert_mentions(&stderr, &["cannot listen for clients on", &listen, "in use"]);
    assert!(!data_dir.exists(), "the failed start created its data dir");
}

// Goal: a peer port already in use is reported with its address; no log is opened and the client port is released.
#[test]
fn server_reports_busy_peer_port() {
    let scratch = Scratch::new();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = busy.local_addr().unwrap().to_string();
    let peers = format!("1={peer},2={},3={}", free_addr(), free_addr());
    let listen = free_addr();
    let data_dir = scratch.path("node-1");
    let args = ["server", "--node-id", "1", "--listen", &listen, "--peers", &peers, "--data-dir", data_dir.to_str().unwrap()];
    let stderr = fails(&scratch, scratch.command(&args, "server"), "server");
    assert_mentions(&stderr, &["cannot listen for peers on", &peer, "in use"]);
    for opened in ["node.json", "commitlog", "consumequeue", "metadata.redb", "vote"] {
        assert!(!data_dir.join(opened).exists(), "the failed start opened {opened}");
    }
    TcpListener::bind(&listen).expect("the failed start still holds the client port");
}

// ---------------------------------------------------------------------------------------------
// server: a data dir of another node

/// Starts node 1 of group g1 on `data_dir` until it has claimed the dir, then kills it.
fn claim_as_node_1(scratch: &Scratch, data_dir: &Path, peers: &str) {
    let args = ["server", "--node-id", "1", "--group", "g1", "--listen", &free_addr(), "--peers", peers, "--data-dir", data_dir.to_str().unwrap()];
    let mut server = spawn(scratch.command(&args, "owner"));
    wait_for_file(&data_dir.join("node.json"), &mut server, || scratch.stderr("owner"));
    server.kill();
}

// Goal: starting another node id on a data dir says whose dir it is, and leaves the dir's identity alone.
#[test]
fn server_refuses_data_dir_of_another_node() {
    let scratch = Scratch::new();
    let (_, peers) = three_peers();
    let data_dir = scratch.path("d");
    claim_as_node_1(&scratch, &data_dir, &peers);
    let before = read_node_json(&data_dir);
    let listen = free_addr();
    let args = ["server", "--node-id", "2", "--group", "g1", "--listen", &listen, "--peers", &peers, "--data-dir", data_dir.to_str().unwrap()];
    let stderr = fails(&scratch, scratch.command(&args, "intruder"), "intruder");
    assert_mentions(&stderr, &[data_dir.to_str().unwrap(), "belongs to node 1 of group g1", "not node 2"]);
    assert_eq!(read_node_json(&data_dir), before);
    TcpListener::bind(&listen).expect("the refused start still holds the client port");
}

// Goal: starting the same node id of another group on a data dir says which group the dir belongs to.
#[test]
fn server_refuses_data_dir_of_another_group() {
    let scratch = Scratch::new();
    let (_, peers) = three_peers();
    let data_dir = scratch.path("d");
    claim_as_node_1(&scratch, &data_dir, &peers);
    let before = read_node_json(&data_dir);
    let args = ["server", "--node-id", "1", "--group", "g2", "--listen", &free_addr(), "--peers", &peers, "--data-dir", data_dir.to_str().unwrap()];
    let stderr = fails(&scratch, scratch.command(&args, "intruder"), "intruder");
    assert_mentions(&stderr, &["belongs to node 1 of group g1", "group g2"]);
    assert_eq!(read_node_json(&data_dir), before);
}

// ---------------------------------------------------------------------------------------------
// client commands

// Goal: every client command against an endpoint nobody listens on says no endpoint answered, and why.
#[test]
fn client_commands_report_unreachable_endpoint() {
    let scratch = Scratch::new();
    let endpoint = "127.0.0.1:1";
    let commands: [&[&str]; 8] = [
        &["topic", "list", "--endpoint", endpoint],
        &["group", "list", "--endpoint", endpoint],
        &["consume", "--endpoint", endpoint, "--topic", "t", "--group", "g"],
        &["topic", "create", "--endpoint", endpoint, "--topic", "t"],
        &["send", "--endpoint", endpoint, "--topic", "t", "--body", "b"],
        &["consume", "--endpoint", endpoint, "--topic", "t", "--until-idle", "1s"],
        &["cluster", "status", "--endpoint", endpoint],
        &["cluster", "transfer-leader", "--endpoint", endpoint, "--to", "2"],
    ];
    for (i, args) in commands.iter().enumerate() {
        let name = format!("client-{i}");
        let stderr = fails(&scratch, scratch.command(args, &name), &name);
        assert_mentions(&stderr, &["no endpoint answered", endpoint, "refused"]);
    }
    assert!(scratch.work_is_empty());
}

// Goal: with several endpoints, each one's failure is listed.
#[test]
fn client_lists_every_failed_endpoint() {
    let scratch = Scratch::new();
    let stderr = fails(&scratch, scratch.command(&["cluster", "status", "--endpoint", "127.0.0.1:1;127.0.0.1:2"], "c"), "c");
    assert_mentions(&stderr, &["no endpoint answered", "127.0.0.1:1", "127.0.0.1:2"]);
}

// Goal: an --endpoint that is not host:port is quoted back as such, without trying to connect.
#[test]
fn client_rejects_malformed_endpoint() {
    let scratch = Scratch::new();
    for (i, bad) in ["nohost", "a:b", ""].iter().enumerate() {
        let name = format!("list-{i}");
        let stderr = fails(&scratch, scratch.command(&["topic", "list", "--endpoint", bad], &name), &name);
        if bad.is_empty() {
            assert_mentions(&stderr, &["--endpoint is empty", "host:port"]);
        } else {
            assert_mentions(&stderr, &[&format!("endpoint \"{bad}\" is not host:port")]);
        }
        assert!(!stderr.contains("no endpoint answered"), "{stderr}");
    }
}

// Goal: consume --until-idle with an unknown unit names the units that exist, before connecting anywhere.
#[test]
fn consume_rejects_unknown_duration_unit() {
    let scratch = Scratch::new();
    let args = ["consume", "--endpoint", "127.0.0.1:1", "--topic", "t", "--until-idle", "5x"];
    let stderr = fails(&scratch, scratch.command(&args, "consume"), "consume");
    assert_mentions(&stderr, &["\"5x\"", "unknown unit", "ms, s or m"]);
    assert!(!stderr.contains("no endpoint answered"), "{stderr}");
    let stderr = fails(&scratch, scratch.command(&["consume", "--endpoint", "127.0.0.1:1", "--topic", "t", "--until-idle", "soon"], "c2"), "c2");
    assert_mentions(&stderr, &["\"soon\"", "2s, 500ms or 1m"]);
}

// Goal: the pop-only consume options without --group are refused by name, before connecting anywhere.
#[test]
fn consume_pop_options_require_group() {
    let scratch = Scratch::new();
    let base = ["consume", "--endpoint", "127.0.0.1:1", "--topic", "t"];
    for (i, extra) in [["--max", "5"], ["--tag-filter", "a"], ["--invisible", "10s"]].iter().enumerate() {
        let name = format!("pop-{i}");
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let stderr = fails(&scratch, scratch.command(&args, &name), &name);
        assert_mentions(&stderr, &["--group"]);
        assert!(!stderr.contains("no endpoint answered"), "{stderr}");
    }
    let args: Vec<&str> = base.iter().copied().chain(["--group", "g", "--local"]).collect();
    let stderr = fails(&scratch, scratch.command(&args, "local"), "local");
    assert_mentions(&stderr, &["--local", "--group", "cannot be used with"]);
    let args: Vec<&str> = base.iter().copied().chain(["--group", "g", "--invisible", "0s"]).collect();
    let stderr = fails(&scratch, scratch.command(&args, "zero"), "zero");
    assert_mentions(&stderr, &["--invisible must be more than 0"]);
    assert!(scratch.work_is_empty());
}

// Goal: topic and group mistakes against a live group (unknown or badly named groups and topics,
// a shrinking queue count, an over-limit setting) each name their v2 code, and nothing changes.
#[tokio::test]
async fn admin_mistakes_are_refused_and_change_nothing() {
    let cluster = common::Cluster::start_with(&["--auto-create-groups", "false"]).await;
    cluster.create_topic("orders", 4).await;
    let scratch = Scratch::new();
    let endpoint = cluster.endpoints();
    let e = endpoint.as_str();
    let cases: [(&[&str], &[&str]); 11] = [
        (&["group", "describe", "--endpoint", e, "--group", "nobody"], &["CONSUMER_GROUP_NOT_FOUND", "nobody does not exist"]),
        (&["group", "delete", "--endpoint", e, "--group", "nobody"], &["CONSUMER_GROUP_NOT_FOUND"]),
        (&["consume", "--endpoint", e, "--topic", "orders", "--group", "nobody", "--until-idle", "1s"], &["CONSUMER_GROUP_NOT_FOUND", "raftmq group create"]),
        (&["group", "create", "--endpoint", e, "--group", "bad name"], &["ILLEGAL_CONSUMER_GROUP", "' '"]),
        (&["group", "create", "--endpoint", e, "--group", "g", "--max-delivery-attempts", "5000"], &["BAD_REQUEST", "over the limit 1000"]),
        (&["group", "describe", "--endpoint", e, "--group", "a/b"], &["ILLEGAL_CONSUMER_GROUP"]),
        (&["topic", "create", "--endpoint", e, "--topic", "a/b"], &["ILLEGAL_TOPIC", "'/'"]),
        (&["topic", "update", "--endpoint", e, "--topic", "orders", "--queues", "2"], &["has 4 queues", "cannot shrink", "asked for 2"]),
        (&["topic", "update", "--endpoint", e, "--topic", "nothing", "--queues", "8"], &["TOPIC_NOT_FOUND", "nothing does not exist"]),
        (&["topic", "describe", "--endpoint", e, "--topic", "nothing"], &["TOPIC_NOT_FOUND"]),
        (&["topic", "delete", "--endpoint", e, "--topic", "nothing"], &["TOPIC_NOT_FOUND"]),
    ];
    for (i, (args, needles)) in cases.iter().enumerate() {
        let name = format!("admin-{i}");
        let stderr = fails(&scratch, scratch.command(args, &name), &name);
        assert_mentions(&stderr, needles);
    }
    // Nothing changed: no group was created, the topic kept its queues.
    let (_, channel) = raftmq::cli::client::connect(&endpoint).await.unwrap();
    let mut admin = raftmq::cli::client::admin(channel);
    let groups = admin.list_groups(raftmq::admin_pb::ListGroupsRequest {}).await.unwrap().into_inner();
    assert!(groups.groups.is_empty(), "{:?}", groups.groups);
    let topics = admin.list_topics(raftmq::admin_pb::ListTopicsRequest {}).await.unwrap().into_inner();
    let names: Vec<(String, u32)> = topics.topics.iter().map(|t| (t.name.clone(), t.queues)).collect();
    assert_eq!(names, vec![("orders".to_string(), 4)]);
}
