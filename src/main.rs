use clap::Parser;
use clap::error::{ContextKind, ContextValue};
use raftmq::cli::{Cli, CliCommand, commands};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTMQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> std::process::ExitCode {
    let cli = parse_cli();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            CliCommand::Server(args) => {
                let config = args.resolve()?;
                let server = raftmq::server::start(config).await?;
                wait_for_stop().await;
                server.stop().await;
                Ok(())
            }
            CliCommand::Router(args) => {
                let router = raftmq::router::start(args).await?;
                wait_for_stop().await;
                router.stop().await;
                Ok(())
            }
            CliCommand::Dev { data_dir, flush } => raftmq::dev::run(data_dir, raftmq::config::parse_flush(&flush)?).await,
            CliCommand::Topic { command } => commands::topic(command).await,
            CliCommand::Group { command } => raftmq::cli::group::run(command).await,
            CliCommand::Send(args) => commands::send(args).await,
            CliCommand::Consume(args) => commands::consume(args).await,
            CliCommand::Cluster { command } => commands::cluster(command).await,
            CliCommand::Bench { command } => raftmq::cli::bench::run(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Like `Cli::parse`, but a bad value that came from a RAFTMQ_* variable is traced to it
/// (clap's own message names only the flag, which the user may never have typed).
fn parse_cli() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            match env_note(&e) {
                Some(note) => {
                    let text = e.render().to_string();
                    match text.split_once("\n\n") {
                        Some((error, rest)) => eprint!("{error}\n{note}\n\n{rest}"),
                        None => eprint!("{text}{note}\n"),
                    }
                }
                None => {
                    let _ = e.print();
                }
            }
            std::process::exit(e.exit_code());
        }
    }
}

fn env_note(e: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return None };
    let flag = arg.split_whitespace().next()?; // "--node-id <NODE_ID>"
    let name = flag.strip_prefix("--")?;
    if std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
        return None;
    }
    let var = format!("RAFTMQ_{}", name.to_uppercase().replace('-', "_"));
    std::env::var_os(&var)?;
    Some(format!("note: that value came from the environment variable {var}; fix or unset it"))
}

/// SIGINT or SIGTERM.
async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
