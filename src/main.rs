fn main() -> std::process::ExitCode {
    // N.B. Rust ignores SIGPIPE, so `purgeq status | head` would panic on a closed pipe. A
    // command-line tool should end quietly instead, as the shell expects. Sockets are not
    // affected: Rust sends on them with MSG_NOSIGNAL.
    // SAFETY: called first thing, before any thread exists; it only resets a disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = purgeq::cli::parse_args();
    purgeq::logging::init(cli.log_format(), cli.verbosity());
    // A one-shot command (enqueue, status, ...) runs on this thread: no worker threads to start.
    let built = if cli.is_one_shot() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return purgeq::cli::ExitCode::Failure.into();
        }
    };
    runtime.block_on(purgeq::cli::run(cli)).into()
}
