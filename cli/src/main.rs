//! `keyward`: runs the whole HTTP API locally on one port, manages keys through the API from a
//! terminal or a script, and manages environments.

use std::io::Write;
use std::process::ExitCode;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use keyward::domain::{EnvName, Issued};
use keyward::error_chain;
use keyward::events::{EventBridgeBus, EventsConfig};
use keyward::http::{NoPeople, People, Settings};
use keyward::oidc::{Oidc, OidcSettings};
use keyward::secrets::{FileSink, PrefixedSink, SecretSink, SecretsManagerSink};
use keyward::store::{DynamoStore, StoreConfig, UsageStore};
use keyward_cli::api::Failure;
use keyward_cli::client::{
    self, ActivityArgs, KeysCommand, LeakPolicyArgs, LeakReportArgs, VerifyArgs,
};
use keyward_cli::{
    Counters, CreateEnvironmentError, StreamPoller, create_environment_in, operator, run_schedule,
    serve,
};
use tokio::signal::unix::SignalKind;

/// The `keyward` command.
#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "API keys per environment: run keyward locally, manage keys from a terminal or a script, and manage environments and tables",
    after_help = client::EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the keys live.
#[derive(Debug, Clone, clap::Args)]
struct StoreArgs {
    /// The store: sqlite:PATH (default sqlite:keyward.db) or dynamodb:TABLE. DynamoDB is reached
    /// through the standard AWS variables (AWS_ENDPOINT_URL, AWS_REGION, credentials)
    #[arg(long, value_name = "STORE", value_parser = StoreConfig::parse, conflicts_with = "db")]
    store: Option<StoreConfig>,
    /// Short for --store sqlite:PATH
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl StoreArgs {
    /// The store named, or `sqlite:keyward.db`.
    fn config(self) -> StoreConfig {
        match (self.store, self.db) {
            (Some(store), _) => store,
            (None, Some(path)) => StoreConfig::Sqlite(path),
            (None, None) => StoreConfig::Sqlite("keyward.db".into()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole HTTP API on one port, and the scheduled rotation
    #[command(long_about = SERVE_ABOUT)]
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// The address to listen on
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The file where rotations of keys with a policy deliver secrets, instead of Secrets
        /// Manager or keyward-secrets.json
        #[arg(long, value_name = "PATH")]
        secrets_file: Option<PathBuf>,
        /// How often the scheduled rotation runs, in seconds from 1 to 86400
        #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = schedule_seconds)]
        schedule_every: u64,
        /// Runs no scheduled rotation: for a DynamoDB store that another serve already rotates, or a store you only inspect
        #[arg(long, conflicts_with = "schedule_every")]
        no_schedule: bool,
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// Lists, makes, rotates and revokes keys through keyward's API
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Reads the environment's activity: who did what to which key, and when
    Activity(ActivityArgs),
    /// Checks a key read from stdin, as the authorizer would
    Verify(VerifyArgs),
    /// Answers leaked keys: ends every key of this keyward found in text on stdin
    Leaks {
        #[command(subcommand)]
        command: LeaksCommand,
    },
    /// Manages environments: makes one on the store, or sets its leak policy through the API
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Manages DynamoDB tables
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
    /// Prints a completion script for a shell: bash, zsh, fish, elvish or powershell
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum LeaksCommand {
    /// Reports the secret keys found in text on stdin as leaked, which ends each of them
    Report(LeakReportArgs),
}

#[derive(Debug, Subcommand)]
enum EnvCommand {
    /// Makes an environment and prints its default key, once; the key's prefix is
    /// KEYWARD_KEY_PREFIX's (default kw), which must be the deployment's
    Create {
        /// Its name: 1 to 32 characters of a-z, 0-9 and -
        #[arg(value_parser = |s: &str| EnvName::parse(s).map_err(|e| e.to_string()))]
        name: EnvName,
        /// Prints {"environment", "key_id", "secret"} as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Shows or sets what a leak of the environment's keys does, through keyward's API
    LeakPolicy(LeakPolicyArgs),
}

#[derive(Debug, Subcommand)]
enum TableCommand {
    /// Makes a DynamoDB table with keyward's indexes, stream and TTL
    Create {
        /// The table's name: 3 to 255 characters of a-z, A-Z, 0-9, _, . and -
        #[arg(value_parser = table_name)]
        table: String,
    },
}

/// Sign-in for people through an OpenID Connect provider; each option may come from its
/// variable instead, as on Lambda.
#[derive(Debug, clap::Args)]
struct OidcArgs {
    /// The identity provider's issuer URL: people's tokens from it are accepted beside keys
    #[arg(long, value_name = "URL", env = keyward::http::ISSUER_VAR)]
    oidc_issuer: Option<String>,
    /// keyward's client id at the issuer: the audience of the tokens it accepts
    #[arg(long, value_name = "ID", env = keyward::http::CLIENT_ID_VAR, requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// The claim that lists a person's groups (default groups; Cognito's is cognito:groups)
    #[arg(long, value_name = "CLAIM", env = keyward::http::GROUPS_CLAIM_VAR, requires = "oidc_issuer")]
    oidc_groups_claim: Option<String>,
    /// Each group's grants, as JSON: {"group": {"environment or *": ["scope", ...]}}
    #[arg(long, value_name = "JSON", env = keyward::http::ROLES_VAR, requires = "oidc_issuer")]
    oidc_roles: Option<String>,
}

impl OidcArgs {
    /// The people `serve` accepts: the issuer's, or nobody when no issuer is given.
    /// An empty value, as a variable set to nothing, counts as not given, as on Lambda.
    fn people(&self) -> Result<Arc<dyn People>, String> {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|v| !v.trim().is_empty())
        }
        let Some(issuer) = given(&self.oidc_issuer) else {
            return Ok(Arc::new(NoPeople));
        };
        let client_id =
            given(&self.oidc_client_id).ok_or("--oidc-client-id is needed beside --oidc-issuer")?;
        let settings = OidcSettings::new(
            issuer,
            client_id,
            given(&self.oidc_groups_claim),
            given(&self.oidc_roles),
        )?;
        Ok(Arc::new(Oidc::new(settings)?))
    }
}

const SERVE_ABOUT: &str = "Runs the whole HTTP API on one port, and the scheduled rotation.

On an empty store it makes the environment development and prints its default key, once.

The scheduled rotation runs every 60 seconds (or --schedule-every). Every rotation of a key
with a rotation policy, scheduled or by hand, delivers its new secret to Secrets Manager when
AWS_ENDPOINT_URL is set or the store is DynamoDB, and otherwise to the file
keyward-secrets.json (or --secrets-file), which it keeps at mode 0600.

With --oidc-issuer and --oidc-client-id, people's tokens from that identity provider are
accepted beside keys, with the scopes that --oidc-roles grants their groups.";

fn schedule_seconds(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|secs| (1..=86_400).contains(secs))
        .ok_or_else(|| "a number of seconds from 1 to 86400".to_owned())
}

fn table_name(s: &str) -> Result<String, String> {
    StoreConfig::parse(&format!("dynamodb:{s}")).map(|_| s.to_owned())
}

/// The local secrets file, when secrets go to a file and no other is named.
const SECRETS_FILE: &str = "keyward-secrets.json";

/// The environment `serve` makes on an empty store.
const FIRST_ENVIRONMENT: &str = "development";

fn cannot_open(e: keyward::store::StoreError) -> String {
    format!("cannot open the store: {}", error_chain(&e))
}

fn print_default_key(name: &EnvName, issued: &Issued) {
    println!(
        "Created the environment {name}. Its default key {} has full access and is shown only this once:",
        issued.key.id
    );
    println!("{}", issued.secret.expose());
}

/// The poller and bus that publish a DynamoDB table's stream while `serve` runs.
async fn stream_publisher(table: &str) -> Result<(StreamPoller, EventBridgeBus), String> {
    let aws = keyward::aws::config().await?;
    let arn = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), table)
        .stream_arn()
        .await
        .map_err(|e| format!("cannot read the table {table}: {}", error_chain(&e)))?
        .ok_or_else(|| {
            format!("the table {table} has no stream; keyward table create makes one")
        })?;
    let poller = StreamPoller::open(aws_sdk_dynamodbstreams::Client::new(&aws), arn).await?;
    let bus = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&aws),
        EventsConfig::from_env()?,
    );
    Ok((poller, bus))
}

/// Where `serve`'s rotations deliver secrets: a file named on the command line, else Secrets
/// Manager when AWS is in use, else the default file.
async fn secret_sink(
    store: &StoreConfig,
    file: Option<PathBuf>,
) -> Result<Box<dyn SecretSink>, String> {
    let aws =
        std::env::var_os("AWS_ENDPOINT_URL").is_some() || matches!(store, StoreConfig::DynamoDb(_));
    Ok(match file {
        None if aws => {
            println!("Rotations of keys with a policy deliver secrets to Secrets Manager.");
            Box::new(SecretsManagerSink::from_config(
                &keyward::aws::config().await?,
            ))
        }
        file => {
            let path = file.unwrap_or_else(|| PathBuf::from(SECRETS_FILE));
            println!(
                "Rotations of keys with a policy deliver secrets to {} (mode 0600).",
                path.display()
            );
            Box::new(FileSink::new(path))
        }
    })
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Keys { command } => client::keys(command).await,
        Command::Activity(args) => client::activity(args).await,
        Command::Verify(args) => client::verify(args).await,
        Command::Leaks {
            command: LeaksCommand::Report(args),
        } => client::report_leaks(args).await,
        Command::Env {
            command: EnvCommand::LeakPolicy(args),
        } => client::leak_policy(args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "keyward",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Table {
            command: TableCommand::Create { table },
        } => {
            let store = DynamoStore::from_env(&table).await?;
            store
                .create_table()
                .await
                .map_err(|e| format!("cannot create the table {table}: {}", error_chain(&e)))?;
            println!("Created the DynamoDB table {table}, with its index, stream and TTL.");
            Ok(())
        }
        Command::Env {
            command: EnvCommand::Create { name, json, store },
        } => {
            let mint = keyward::mint().with_key_prefix(keyward::key_prefix_from_env()?);
            let store = store.config().open().await.map_err(cannot_open)?;
            let issued = create_environment_in(&*store, &name, operator(), &mint)
                .await
                .map_err(|e| Failure::Failed(error_chain(&e)))?;
            if json {
                let out = serde_json::json!({"environment": name, "key_id": issued.key.id, "secret": issued.secret.expose()});
                println!("{out}");
            } else {
                print_default_key(&name, &issued);
            }
            Ok(())
        }
        Command::Serve {
            store,
            listen,
            secrets_file,
            schedule_every,
            no_schedule,
            oidc,
        } => {
            keyward::logging::init_with_writer(std::io::stderr);
            let settings = Settings::from_env()?;
            let people = oidc.people()?;
            keyward::leak::github::install(keyward::leak::github::GithubKeys::from_env()?);
            keyward::leak::gitlab::install(keyward::leak::gitlab::GitlabToken::from_env()?);
            let mint = Arc::new(keyward::mint().with_key_prefix(settings.key_prefix.clone()));
            let config = store.config();
            let schedule_every = (!no_schedule).then(|| Duration::from_secs(schedule_every));
            let store = config.open_to_serve().await.map_err(cannot_open)?;
            let publisher = match &config {
                StoreConfig::DynamoDb(table) => Some(stream_publisher(table).await?),
                StoreConfig::Sqlite(_) => None,
            };
            if store
                .is_empty()
                .await
                .map_err(|e| format!("cannot read the store: {}", error_chain(&e)))?
            {
                let name = EnvName::parse(FIRST_ENVIRONMENT).expect("a valid literal name");
                match create_environment_in(&*store, &name, operator(), &mint).await {
                    Ok(issued) => print_default_key(&name, &issued),
                    Err(CreateEnvironmentError::Exists(_)) => {}
                    Err(e) => return Err(Failure::Failed(error_chain(&e))),
                }
            }
            let secrets: Arc<dyn SecretSink> = Arc::new(PrefixedSink::new(
                secret_sink(&config, secrets_file).await?,
                settings.secret_prefix.clone(),
            ));
            if schedule_every.is_none() {
                println!("Scheduled rotation is off.");
            }
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            println!("keyward is listening on http://{addr}");
            std::io::stdout().flush().map_err(|e| e.to_string())?;
            let scheduling = async {
                match schedule_every {
                    Some(period) => run_schedule(&*store, &*secrets, &mint, period).await,
                    None => std::future::pending().await,
                }
            };
            let publishing = async {
                match publisher {
                    Some((poller, bus)) => poller.run(&bus, &*store, &mint).await,
                    None => std::future::pending().await,
                }
            };
            let counters = Counters::from_env(Arc::clone(&store) as Arc<dyn UsageStore>)?;
            let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
                .map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
            let outcome = tokio::select! {
                served = serve(
                    listener,
                    Arc::clone(&store),
                    settings,
                    Arc::clone(&secrets),
                    Arc::clone(&mint),
                    counters.clone(),
                    people,
                ) => served.map_err(|e| Failure::Failed(e.to_string())),
                () = publishing => Ok(()),
                () = scheduling => Ok(()),
                () = counters.sweep() => Ok(()),
                _ = tokio::signal::ctrl_c() => Ok(()),
                _ = terminate.recv() => Ok(()),
            };
            let left = counters.flush_all(Duration::from_secs(5)).await;
            if left > 0 {
                eprintln!("warning: {left} counted checks could not be written to the store");
            }
            outcome
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(error.exit_code() as u8);
        }
        // A secret pasted where an id or an option belongs would be repeated in clap's
        // message, and stderr ends up in CI logs.
        Err(error) => {
            eprint!("{}", keyward_cli::api::redact_lines(&error.to_string()));
            return ExitCode::from(error.exit_code() as u8);
        }
    };
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", keyward_cli::api::redact(&failure.to_string()));
            ExitCode::from(failure.exit_status())
        }
    }
}
