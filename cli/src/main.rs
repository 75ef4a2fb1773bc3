//! `keyward`: runs the whole HTTP API locally on one port, and manages environments.

use std::io::Write;
use std::process::ExitCode;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyward::domain::{EnvName, Issued};
use keyward::error_chain;
use keyward::events::{EventBridgeBus, EventsConfig};
use keyward::http::Settings;
use keyward::secrets::{FileSink, PrefixedSink, SecretSink, SecretsManagerSink};
use keyward::store::{DynamoStore, KeyStore, StoreConfig};
use keyward_cli::{
    CreateEnvironmentError, StreamPoller, create_environment_in, operator, run_schedule, serve,
};

const USAGE: &str = "usage:
  keyward serve [--listen ADDR] [--store STORE | --db PATH] [--secrets-file PATH]
                [--schedule-every SECONDS | --no-schedule]
  keyward env create NAME [--json] [--store STORE | --db PATH]
  keyward table create TABLE

STORE is sqlite:PATH (default sqlite:keyward.db) or dynamodb:TABLE; --db PATH is short for
--store sqlite:PATH. DynamoDB is reached through the standard AWS variables (AWS_ENDPOINT_URL,
AWS_REGION, credentials). serve listens on 127.0.0.1:8080 unless --listen says otherwise.

serve also runs the scheduled rotation every 60 seconds (or --schedule-every). Every rotation
of a key with a rotation policy, scheduled or by hand, delivers its new secret to Secrets
Manager when AWS_ENDPOINT_URL is set or the store is DynamoDB, and otherwise to the file
keyward-secrets.json (or --secrets-file), which it keeps at mode 0600. --no-schedule turns
the schedule off, for a second serve on the same store or a store you only inspect.";

/// The local secrets file, when secrets go to a file and no other is named.
const SECRETS_FILE: &str = "keyward-secrets.json";

/// The environment `serve` makes on an empty store.
const FIRST_ENVIRONMENT: &str = "development";

enum Command {
    Serve {
        listen: String,
        secrets_file: Option<PathBuf>,
        /// How often the scheduled rotation runs; `None` when it is off.
        schedule_every: Option<Duration>,
    },
    CreateEnvironment {
        name: EnvName,
        json: bool,
    },
    CreateTable {
        table: String,
    },
}

struct Args {
    command: Command,
    store: StoreConfig,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut store = StoreConfig::Sqlite("keyward.db".into());
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut secrets_file = None;
    let mut schedule_every = Some(Duration::from_secs(60));
    let mut json = false;
    let mut words = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |flag: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--store" => store = StoreConfig::parse(&value("--store")?)?,
            "--db" => store = StoreConfig::Sqlite(value("--db")?.into()),
            "--listen" => listen = value("--listen")?,
            "--secrets-file" => secrets_file = Some(PathBuf::from(value("--secrets-file")?)),
            "--schedule-every" => {
                schedule_every = value("--schedule-every")?
                    .parse::<u64>()
                    .ok()
                    .filter(|&secs| (1..=86_400).contains(&secs))
                    .map(Duration::from_secs)
                    .ok_or("--schedule-every is a number of seconds from 1 to 86400")
                    .map(Some)?;
            }
            "--no-schedule" => schedule_every = None,
            "--json" => json = true,
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            word => words.push(word),
        }
    }
    let command = match words.as_slice() {
        ["serve"] => Command::Serve {
            listen,
            secrets_file,
            schedule_every,
        },
        ["env", "create", name] => Command::CreateEnvironment {
            name: EnvName::parse(name).map_err(|e| e.to_string())?,
            json,
        },
        ["table", "create", table] => {
            StoreConfig::parse(&format!("dynamodb:{table}"))?;
            Command::CreateTable {
                table: (*table).to_owned(),
            }
        }
        _ => return Err("unknown command".to_owned()),
    };
    Ok(Args { command, store })
}

async fn open(store: &StoreConfig) -> Result<Arc<dyn KeyStore>, String> {
    store
        .open()
        .await
        .map_err(|e| format!("cannot open the store: {}", error_chain(&e)))
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

async fn run(args: Args) -> Result<(), String> {
    match args.command {
        Command::CreateTable { table } => {
            let store = DynamoStore::from_env(&table).await?;
            store
                .create_table()
                .await
                .map_err(|e| format!("cannot create the table {table}: {}", error_chain(&e)))?;
            println!("Created the DynamoDB table {table}, with its index, stream and TTL.");
            Ok(())
        }
        Command::CreateEnvironment { name, json } => {
            let store = open(&args.store).await?;
            let issued = create_environment_in(&*store, &name, operator(), &keyward::mint())
                .await
                .map_err(|e| error_chain(&e))?;
            if json {
                let out = serde_json::json!({"environment": name, "key_id": issued.key.id, "secret": issued.secret.expose()});
                println!("{out}");
            } else {
                print_default_key(&name, &issued);
            }
            Ok(())
        }
        Command::Serve {
            listen,
            secrets_file,
            schedule_every,
        } => {
            keyward::logging::init_with_writer(std::io::stderr);
            let settings = Settings::from_env()?;
            let mint = Arc::new(keyward::mint());
            let store = open(&args.store).await?;
            let publisher = match &args.store {
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
                    Err(e) => return Err(error_chain(&e)),
                }
            }
            let secrets: Arc<dyn SecretSink> = Arc::new(PrefixedSink::new(
                secret_sink(&args.store, secrets_file).await?,
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
            tokio::select! {
                served = serve(
                    listener,
                    Arc::clone(&store),
                    settings,
                    Arc::clone(&secrets),
                    Arc::clone(&mint),
                ) => served.map_err(|e| e.to_string()),
                () = publishing => Ok(()),
                () = scheduling => Ok(()),
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("keyward: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keyward: {message}");
            ExitCode::FAILURE
        }
    }
}
