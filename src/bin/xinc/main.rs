//! The `xinc` command-line tool: train or import INRs, compute their canvas, render, and run the
//! demo main job. Each subcommand is a thin layer over the library.

mod args;
mod canvas;
mod commands;
mod output_guard;
mod parsers;

use candle_core::Device;
use clap::Parser;
use xinc::XincError;

use args::{Cli, Command, ImportCommand, TrainCommand};
use canvas::canvas_cmd;
use commands::{
    ablate_cmd, batch_cmd, check_device_cmd, compress_cmd, demo_cmd, import_cmd, import_nerv_cmd,
    inspect_cmd, prune_cmd, render_cmd, report_cmd, stats_cmd, synth_cmd, train_ffn_cmd,
    train_nerv_cmd, train_siren_cmd,
};
use output_guard::OutputGuard;

/// What every handler returns; an error ends the process with status 1.
type CliResult<T = ()> = xinc::Result<T>;

/// An invalid-argument error.
fn fail<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(XincError::InvalidArgument(msg.into()))
}

fn main() {
    // Behave like other command-line tools when the reader of a pipe leaves (`xinc inspect | head`).
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Runs a command; when it fails, removes what it created under its output.
fn run(cli: Cli) -> CliResult {
    let device = device(&cli.device)?;
    let guard = cli.command.output().map(OutputGuard::before);
    let result = dispatch(cli.command, &device);
    if let (Err(_), Some(guard)) = (&result, guard) {
        guard.undo();
    }
    result
}

/// The `--device` flag.
fn device(name: &str) -> CliResult<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => fail(format!("unknown device `{other}` (cpu or cuda)")),
    }
}

/// The handler of each subcommand.
fn dispatch(command: Command, device: &Device) -> CliResult {
    match command {
        Command::Train(TrainCommand::Ffn(a)) => train_ffn_cmd(a, device),
        Command::Train(TrainCommand::Siren(a)) => train_siren_cmd(a, device),
        Command::Train(TrainCommand::Nerv(a)) => train_nerv_cmd(a, device),
        Command::Import(ImportCommand::Ffn(a)) => import_cmd(a, "ffn", device),
        Command::Import(ImportCommand::Siren(a)) => import_cmd(a, "siren", device),
        Command::Import(ImportCommand::Nerv(a)) => import_nerv_cmd(a, device),
        Command::Canvas(a) => canvas_cmd(a, device),
        Command::Render(a) => render_cmd(a, device),
        Command::Compress(a) => compress_cmd(a, device),
        Command::Prune(a) => prune_cmd(a, device),
        Command::Ablate(a) => ablate_cmd(a, device),
        Command::Demo(a) => demo_cmd(a, device),
        Command::Report(a) => report_cmd(a, device),
        Command::CheckDevice(a) => check_device_cmd(a, device),
        Command::Batch(a) => batch_cmd(a, device),
        Command::Stats(a) => stats_cmd(a),
        Command::Synth(a) => synth_cmd(a),
        Command::Inspect(a) => inspect_cmd(a),
    }
}
