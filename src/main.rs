use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = purgeq::cli::Cli::parse();
    purgeq::logging::init(cli.log_format(), cli.verbosity());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return purgeq::cli::ExitCode::Failure.into();
        }
    };
    runtime.block_on(purgeq::cli::run(cli)).into()
}
