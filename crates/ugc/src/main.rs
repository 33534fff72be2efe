mod configuration;
mod kafka_engine;
mod process;
mod startup;
mod status;
mod telemetry;

use std::time::Duration;

use configuration::Command;
use ugc_model::UserId;

/// Rust allocations go to jemalloc (C libraries keep their own malloc): see Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = configuration::parse()?;
    // Held to the end of main: dropping it writes out the lines still queued.
    let log_writer = telemetry::init(&cli.settings.log, cli.settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(startup::serve(cli.settings)),
        Command::Token(args) => {
            let user = UserId::parse(args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
            let cfg = startup::auth_config(&cli.settings)?;
            let token = ugc_edge::auth::mint_hs256(
                &cfg,
                &user,
                &args.roles,
                Duration::from_secs(args.ttl_secs),
            )?;
            match args.player {
                // What a person pastes into a browser: the token rides in the fragment,
                // which browsers never send to a server.
                Some(film) => {
                    let mut at = cli.settings.listen;
                    // Listening on every interface: this machine's own address still works.
                    if at.ip().is_unspecified() {
                        at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    println!("http://{at}/player/{film}#token={token}");
                }
                None => println!("{token}"),
            }
            Ok(())
        }
        Command::KafkaEngineDdl(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(kafka_engine::run(&cli.settings, &args)),
        Command::Status(args) => {
            let healthy = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(status::run(args))?;
            if !healthy {
                drop(log_writer);
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
