//! `agent-ctl`: the debugging client of the kata-agent ttrpc API, for people
//! and for tests.
//!
//! Any method is callable by name with no per-method code: the method, its
//! input and output messages are looked up in the protobuf descriptors that
//! `protocols` compiles in ([`catalog`]); the request JSON is parsed into a
//! dynamic message and encoded ([`codec`]); a raw ttrpc request carries it
//! ([`rpc`]) over a Unix, vsock or hybrid vsock stream ([`transport`],
//! [`addr`]); the response is decoded the same way and printed as JSON.
//! `repeat` ([`bench`]) sends one request many times over several
//! connections and reports latency and throughput.
//!
//! Exit status: 0 ok; 1 a request or connection failed; 2 a usage error.

mod addr;
mod bench;
mod catalog;
mod cli;
mod codec;
mod duration;
mod rpc;
mod transport;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{anyhow, Result};

use crate::catalog::Catalog;
use crate::cli::{Cli, Command, UsageError};
use crate::codec::Input;

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect();
    match args.map_err(anyhow::Error::from).and_then(|a| run(&a)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                eprintln!("run 'agent-ctl --help' for usage");
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    let cli = cli::parse(args)?;
    let catalog = Catalog::load();
    match &cli.command {
        Command::Help => {
            out(&cli::help(&catalog.list()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            out(&format!("agent-ctl {}\n", env!("CARGO_PKG_VERSION")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            out(&catalog.list())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Describe { name } => {
            out(&catalog.describe(name).map_err(UsageError)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            method,
            input,
            emit_defaults,
        } => call(&cli, &catalog, method, input.as_deref(), *emit_defaults),
        Command::Repeat {
            method,
            input,
            count,
            connections,
            json,
        } => repeat(
            &cli,
            &catalog,
            method,
            input.as_deref(),
            *count,
            *connections,
            *json,
        ),
    }
}

/// Writes to stdout; a reader that went away (`agent-ctl list | head`) is
/// not an error.
fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Looks the method up and turns the JSON argument into the request payload;
/// every failure here is the user's input, so a usage error.
fn prepare<'a>(
    catalog: &'a Catalog,
    method: &str,
    input: Option<&str>,
) -> Result<(&'a catalog::Method, Vec<u8>)> {
    let method = catalog.find(method).map_err(UsageError)?;
    if method.streaming {
        return Err(UsageError(format!(
            "{} is a streaming method; agent-ctl sends unary requests only",
            method.path()
        ))
        .into());
    }
    let json = Input::from_arg(input)
        .read()
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let msg = codec::parse_json(&method.input, &json).map_err(|e| UsageError(format!("{e:#}")))?;
    Ok((method, codec::encode(&*msg)?))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| anyhow!("start the async runtime: {e}"))
}

fn call(
    cli: &Cli,
    catalog: &Catalog,
    method: &str,
    input: Option<&str>,
    emit_defaults: bool,
) -> Result<ExitCode> {
    let (method, payload) = prepare(catalog, method, input)?;
    let addr = cli.address(std::env::var(cli::ADDR_ENV).ok())?;
    let req = rpc::request(method, payload, cli.timeout);
    let reply = runtime()?.block_on(async {
        let client = transport::connect(&addr, cli.timeout).await?;
        Ok::<_, anyhow::Error>(rpc::call(&client, req).await)
    })?;
    match reply {
        Ok(bytes) => {
            let msg = codec::decode(&method.output, &bytes)?;
            out(&format!("{}\n", codec::to_json(&*msg, emit_defaults)?))?;
            Ok(ExitCode::SUCCESS)
        }
        // Printed as is, so the line reads `error: <CODE>: <message>`.
        Err(e) => Err(e.into()),
    }
}

fn repeat(
    cli: &Cli,
    catalog: &Catalog,
    method: &str,
    input: Option<&str>,
    count: u64,
    connections: u32,
    json: bool,
) -> Result<ExitCode> {
    let (method, payload) = prepare(catalog, method, input)?;
    let addr = cli.address(std::env::var(cli::ADDR_ENV).ok())?;
    let req = rpc::request(method, payload, cli.timeout);
    let report = runtime()?.block_on(bench::run(
        &addr,
        cli.timeout,
        method.path(),
        req,
        count,
        connections,
    ))?;
    if json {
        out(&format!("{}\n", report.json()))?;
    } else {
        out(&report.text())?;
    }
    if report.errors > 0 {
        eprintln!(
            "error: {} of {} requests failed; first: {}",
            report.errors,
            report.count,
            report.first_error.as_deref().unwrap_or("unknown")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
