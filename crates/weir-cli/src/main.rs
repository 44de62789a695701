//! `weir`: run a node, publish events to it, follow its topics, deploy and replay functions.

mod auth;
mod backend;
mod bench;
mod client;
mod deploy;
mod entity;
mod kv;
mod new;
mod pipelines;
mod replay;
mod schema;
mod serve;
mod subscriber;
mod view;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a pipeline allocates and frees small buffers (event
/// strings, records, outputs) on several threads at once, where glibc's arenas spent
/// about a sixth of the pipeline's CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "weir: events through WebAssembly functions, on a durable log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: the embedded log under --data, the HTTP API on --listen, the app in --app.
    Serve(serve::ServeArgs),
    /// Publish one event (from flags) or many (--file events.jsonl, one JSON event per line).
    Publish(client::PublishArgs),
    /// Follow a topic live, printing each event as one JSON line.
    Tail(client::TailArgs),
    /// Show the node's functions, pipelines and topics.
    Status(client::StatusArgs),
    /// Inspect or reset consumer groups.
    Group {
        #[command(subcommand)]
        command: client::GroupCommand,
    },
    /// Scaffold a function project (Rust, JavaScript or Python) that builds to a component.
    New(new::NewArgs),
    /// Read and write the node's key-value namespaces.
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Deploy the app (its manifest and function components) to a running node, no restart.
    Deploy(deploy::DeployArgs),
    /// Make an earlier version of a function active again.
    Rollback(deploy::RollbackArgs),
    /// Send a pipeline's dead-lettered events back to the topics they came from.
    Redrive(pipelines::RedriveArgs),
    /// Show a long-running job a job route accepted (`--wait SECS` until it finishes).
    Job(pipelines::JobArgs),
    /// Run a pipeline's recorded events through a function version (and a new .wasm) and
    /// diff the outputs, publishing nothing.
    Replay(replay::ReplayArgs),
    /// Send a command to an entity (`weir entity order SO-1 place --data '{...}'`), or show
    /// its state (`--version N`, `--at TIME`) or its events (`--events`).
    Entity(entity::EntityArgs),
    /// Query a view (`weir view orders-by-customer --where customer=CUST-1`), one JSON row
    /// per line.
    View(view::ViewArgs),
    /// Event schemas: list, get and put them on a running node, or check the app's schema
    /// files offline (`weir schema check`).
    Schema {
        #[command(subcommand)]
        command: schema::SchemaCommand,
    },
    /// Print the app's AsyncAPI 3.0 document: from the running node, or offline from
    /// weir.toml (`--app`).
    Asyncapi(schema::AsyncapiArgs),
    /// Manage API keys: create, list, revoke.
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Measure weir on this machine.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Publish(args) => client::publish(args).await,
            Command::Tail(args) => client::tail(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Bench { what } => bench::run(what).await,
            Command::Auth { command } => auth::run(command).await,
            Command::New(args) => new::run(args),
            Command::Group { command } => client::group(command).await,
            Command::Kv { command } => kv::run(command).await,
            Command::Schema { command } => schema::run(command).await,
            Command::Asyncapi(args) => schema::asyncapi(args).await,
            Command::Entity(args) => entity::run(args).await,
            Command::View(args) => view::run(args).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::Rollback(args) => deploy::rollback(args).await,
            Command::Redrive(args) => pipelines::redrive(args).await,
            Command::Job(args) => pipelines::job(args).await,
            Command::Replay(args) => replay::run(args).await,
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

/// The default app manifest: `./weir.toml` if there is one.
fn default_app() -> Option<PathBuf> {
    let path = PathBuf::from("weir.toml");
    path.exists().then_some(path)
}
