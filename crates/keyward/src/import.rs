//! `keyward import`: brings keys issued by another system into an app, streaming a JSONL or
//! CSV file to a running server in batches (docs/import.md).
//!
//! Plaintext secrets never leave this process: each is hashed here and only its SHA-256 and
//! a short display prefix are sent. The server skips keys whose secret it already knows, so
//! any batch may be sent twice; a checkpoint file after each batch, written in file order,
//! lets an interrupted import resume where it stopped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use keyward_core::secret::{foreign_start, KeyFormatError};
use keyward_core::{KeyHash, ParsedKey};
use keyward_proto::{ImportKeysRequest, ImportKeysResponse, ImportedKey, MAX_IMPORT_BATCH};
use keyward_sdk::{Client, Error as SdkError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::{CliError, Connection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The slug of the app that receives the keys
    #[arg(long)]
    app: String,
    /// A JSONL or CSV file of keys; see docs/import.md for the columns
    file: PathBuf,
    /// The file's format [default: from its extension]
    #[arg(long)]
    format: Option<Format>,
    /// Keys per request (1 to 1000)
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Requests in flight at once
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Where progress is kept between runs [default: FILE.import-state.json]
    #[arg(long)]
    state: Option<PathBuf>,
    /// Start from the top of the file even if an earlier run got further
    #[arg(long)]
    restart: bool,
}

/// How far an import of one file into one app got. Written after every batch, in file
/// order, so that everything before `next_line` is known to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    app: String,
    file_len: u64,
    next_line: u64,
    imported: u64,
    skipped: u64,
    invalid: u64,
    complete: bool,
}

impl Checkpoint {
    fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Replaces the file in one step, so a crash leaves the old checkpoint or the new one.
    fn save(&self, path: &Path) -> Result<(), CliError> {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, serde_json::to_vec_pretty(self)?)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|error| {
                CliError::BadArgument(format!("cannot write {}: {error}", path.display()))
            })
    }
}

/// What one run did, printed at the end.
#[derive(Debug, Serialize)]
struct Summary {
    imported: u64,
    skipped: u64,
    invalid: u64,
    /// The line this run started at (1 unless it resumed).
    started_at_line: u64,
}

/// One row as a file gives it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRow {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    hash: Option<String>,
    name: String,
    #[serde(default)]
    owner_user_id: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<Map<String, Value>>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

impl SourceRow {
    /// Hashes the secret (dropping the plaintext) and makes the wire row.
    fn into_imported(self) -> Result<ImportedKey, String> {
        let (hash, start, keyward_format) = match (self.secret, self.hash) {
            (Some(_), Some(_)) => return Err("give `secret` or `hash`, not both".to_owned()),
            (None, None) => return Err("a row needs `secret` or `hash`".to_owned()),
            (Some(secret), None) => match ParsedKey::parse(&secret) {
                Ok(parsed) => (parsed.hash(), parsed.start(), true),
                // Verification refuses such strings unread as typos: the key could never work.
                Err(KeyFormatError::BadChecksum) => {
                    return Err(
                        "`secret` has Keyward's format but a wrong checksum (mistyped?)".to_owned(),
                    )
                }
                Err(_) => (KeyHash::of(&secret), foreign_start(&secret), false),
            },
            (None, Some(hash)) => {
                let hash = KeyHash::from_hex(hash.trim())
                    .ok_or_else(|| "`hash` must be 64 hexadecimal digits".to_owned())?;
                (hash, String::new(), false)
            }
        };
        Ok(ImportedKey {
            hash: hash.to_hex(),
            start,
            keyward_format,
            name: self.name,
            owner_user_id: self.owner_user_id,
            organization_id: self.organization_id,
            permissions: self.permissions,
            meta: self.meta,
            expires_at: self.expires_at,
        })
    }
}

/// Rows of a file, with the line each starts on.
enum Rows {
    Jsonl {
        lines: BufReader<File>,
        line: u64,
    },
    Csv {
        reader: csv::Reader<File>,
        columns: Vec<Column>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Column {
    Secret,
    Hash,
    Name,
    Owner,
    Organization,
    Permissions,
    Meta,
    ExpiresAt,
}

impl Column {
    fn named(header: &str) -> Option<Self> {
        Some(match header.trim() {
            "secret" => Self::Secret,
            "hash" => Self::Hash,
            "name" => Self::Name,
            "owner_user_id" => Self::Owner,
            "organization_id" => Self::Organization,
            "permissions" => Self::Permissions,
            "meta" => Self::Meta,
            "expires_at" => Self::ExpiresAt,
            _ => return None,
        })
    }
}

impl Rows {
    fn open(path: &Path, format: Format) -> Result<Self, CliError> {
        let file = File::open(path).map_err(|error| {
            CliError::BadArgument(format!("cannot open {}: {error}", path.display()))
        })?;
        match format {
            Format::Jsonl => Ok(Self::Jsonl {
                lines: BufReader::new(file),
                line: 0,
            }),
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
                let headers = reader.headers().map_err(|error| {
                    CliError::BadArgument(format!("unreadable CSV header: {error}"))
                })?;
                let columns = headers
                    .iter()
                    .map(|header| {
                        Column::named(header).ok_or_else(|| {
                            CliError::BadArgument(format!(
                                "unknown CSV column `{}`; see docs/import.md",
                                header.trim()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::Csv { reader, columns })
            }
        }
    }

    /// The next row and its line number; `None` at the end of the file.
    fn next_row(&mut self) -> Option<(u64, Result<SourceRow, String>)> {
        match self {
            Self::Jsonl { lines, line } => loop {
                let mut text = String::new();
                *line += 1;
                match lines.read_line(&mut text) {
                    Ok(0) => return None,
                    Ok(_) if text.trim().is_empty() => continue,
                    Ok(_) => {
                        let row = serde_json::from_str::<SourceRow>(&text)
                            .map_err(|error| without_quoted(&error.to_string()));
                        return Some((*line, row));
                    }
                    Err(error) => return Some((*line, Err(format!("unreadable line: {error}")))),
                }
            },
            Self::Csv { reader, columns } => {
                let mut record = csv::StringRecord::new();
                match reader.read_record(&mut record) {
                    Ok(false) => None,
                    Ok(true) => {
                        let line = record.position().map_or(0, csv::Position::line);
                        Some((line, csv_row(columns, &record)))
                    }
                    Err(error) => {
                        let line = error.position().map_or(0, csv::Position::line);
                        Some((line, Err(without_quoted(&error.to_string()))))
                    }
                }
            }
        }
    }
}

fn csv_row(columns: &[Column], record: &csv::StringRecord) -> Result<SourceRow, String> {
    let mut row = SourceRow::default();
    let mut named = false;
    for (column, cell) in columns.iter().zip(record.iter()) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        let owned = Some(cell.to_owned());
        match column {
            Column::Secret => row.secret = owned,
            Column::Hash => row.hash = owned,
            Column::Name => {
                row.name = cell.to_owned();
                named = true;
            }
            Column::Owner => row.owner_user_id = owned,
            Column::Organization => row.organization_id = owned,
            Column::Permissions => {
                row.permissions = Some(
                    cell.split([' ', ','])
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            Column::Meta => {
                row.meta = Some(
                    serde_json::from_str(cell)
                        .map_err(|_| "`meta` must be a JSON object".to_owned())?,
                );
            }
            Column::ExpiresAt => {
                row.expires_at = Some(
                    OffsetDateTime::parse(cell, &Rfc3339)
                        .map_err(|_| "`expires_at` must be an RFC 3339 time".to_owned())?,
                );
            }
        }
    }
    if !named {
        return Err("missing field `name`".to_owned());
    }
    Ok(row)
}

/// Error messages may quote the offending value, which could be a secret in the wrong
/// column: keep the message, drop quoted values (and long backticked names).
fn without_quoted(message: &str) -> String {
    let mut kept = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        kept.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            kept.push('…');
            return kept;
        };
        let quoted = &after[..close];
        if quote == '`' && quoted.len() <= 32 {
            kept.push_str(quoted);
        } else {
            kept.push('…');
        }
        kept.push(quote);
        rest = &after[close + 1..];
    }
    kept.push_str(rest);
    kept
}

/// A batch read from the file: the rows to send, with their lines, and the rows that could
/// not even be read.
struct Batch {
    lines: Vec<u64>,
    keys: Vec<ImportedKey>,
    unreadable: Vec<(u64, String)>,
    /// The line after the batch's last row.
    next_line: u64,
}

fn format_of(path: &Path, given: Option<Format>) -> Result<Format, CliError> {
    if let Some(format) = given {
        return Ok(format);
    }
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        Some("csv") => Ok(Format::Csv),
        _ => Err(CliError::BadArgument(
            "cannot tell the file's format from its name; pass --format jsonl or --format csv"
                .to_owned(),
        )),
    }
}

pub(crate) async fn run(connection: &Connection, args: ImportArgs) -> Result<(), CliError> {
    if !(1..=MAX_IMPORT_BATCH).contains(&args.batch_size) {
        return Err(CliError::BadArgument(format!(
            "--batch-size must be between 1 and {MAX_IMPORT_BATCH}"
        )));
    }
    let client = connection.client()?;
    let format = format_of(&args.file, args.format)?;
    let file_len = std::fs::metadata(&args.file)
        .map_err(|error| {
            CliError::BadArgument(format!("cannot read {}: {error}", args.file.display()))
        })?
        .len();
    let state_path = args.state.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".import-state.json");
        PathBuf::from(name)
    });
    let mut checkpoint = match Checkpoint::load(&state_path) {
        Some(saved) if !args.restart && saved.app == args.app && saved.file_len == file_len => {
            saved
        }
        _ => Checkpoint {
            app: args.app.clone(),
            file_len,
            next_line: 1,
            ..Checkpoint::default()
        },
    };
    if checkpoint.complete {
        eprintln!(
            "{} was already imported into `{}` (pass --restart to send it again; keys already \
             present are skipped)",
            args.file.display(),
            args.app
        );
        return print_summary(connection, &checkpoint, checkpoint.next_line);
    }
    let started_at_line = checkpoint.next_line;
    if started_at_line > 1 {
        eprintln!("resuming at line {started_at_line}");
    }

    let mut rows = Rows::open(&args.file, format)?;
    let progress = progress_bar();
    let batch_size = args.batch_size;
    let resume_line = started_at_line;
    let batches = std::iter::from_fn(move || {
        let mut batch = Batch {
            lines: Vec::new(),
            keys: Vec::new(),
            unreadable: Vec::new(),
            next_line: 0,
        };
        while batch.keys.len() + batch.unreadable.len() < batch_size {
            let Some((line, row)) = rows.next_row() else {
                break;
            };
            batch.next_line = line + 1;
            if line < resume_line {
                continue;
            }
            match row.and_then(SourceRow::into_imported) {
                Ok(key) => {
                    batch.lines.push(line);
                    batch.keys.push(key);
                }
                Err(message) => batch.unreadable.push((line, message)),
            }
        }
        (batch.next_line > 0).then_some(batch)
    });
    let app = args.app.clone();
    let mut results = futures_util::stream::iter(batches)
        .map(|batch| {
            let (client, app) = (&client, &app);
            async move {
                let answer = if batch.keys.is_empty() {
                    ImportKeysResponse::default()
                } else {
                    send_with_retries(client, app, &batch.keys).await?
                };
                Ok::<_, CliError>((batch, answer))
            }
        })
        .buffered(args.concurrency.max(1));

    while let Some(result) = results.next().await {
        let (batch, answer) = match result {
            Ok(done) => done,
            Err(error) => {
                progress.abandon();
                eprintln!(
                    "stopped at line {}; run the same command again to resume",
                    checkpoint.next_line
                );
                return Err(error);
            }
        };
        let mut refused: Vec<(u64, String)> = batch.unreadable;
        refused.extend(answer.invalid.iter().map(|row| {
            let line = batch.lines.get(row.index as usize).copied().unwrap_or(0);
            (line, format!("{}: {}", row.code, row.message))
        }));
        refused.sort_by_key(|(line, _)| *line);
        for (line, message) in &refused {
            progress.suspend(|| eprintln!("line {line}: {message}"));
        }
        checkpoint.imported += answer.imported;
        checkpoint.skipped += answer.skipped;
        checkpoint.invalid += refused.len() as u64;
        checkpoint.next_line = batch.next_line;
        checkpoint.save(&state_path)?;
        progress.set_position(checkpoint.next_line);
        progress.set_message(format!(
            "{} imported, {} skipped, {} invalid",
            checkpoint.imported, checkpoint.skipped, checkpoint.invalid
        ));
    }
    progress.finish_and_clear();
    checkpoint.complete = true;
    checkpoint.save(&state_path)?;
    print_summary(connection, &checkpoint, started_at_line)
}

fn print_summary(
    connection: &Connection,
    checkpoint: &Checkpoint,
    started_at_line: u64,
) -> Result<(), CliError> {
    let summary = Summary {
        imported: checkpoint.imported,
        skipped: checkpoint.skipped,
        invalid: checkpoint.invalid,
        started_at_line,
    };
    if connection.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "imported {}, skipped {} (already present), invalid {}",
            summary.imported, summary.skipped, summary.invalid
        );
    }
    Ok(())
}

/// Progress in lines read; drawn only on a terminal.
fn progress_bar() -> ProgressBar {
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} line {pos} ({per_sec}) · {msg} · {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    progress
}

/// Sends a batch, trying again when the server is briefly away: the server skips keys it
/// already has, so a retry never imports anything twice.
async fn send_with_retries(
    client: &Client,
    app: &str,
    keys: &[ImportedKey],
) -> Result<ImportKeysResponse, CliError> {
    let request = ImportKeysRequest {
        keys: keys.to_vec(),
    };
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.import_keys(app, &request).await {
            Ok(answer) => return Ok(answer),
            Err(error) if attempts < 6 && transient(&error) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn transient(error: &SdkError) -> bool {
    match error {
        SdkError::Connection { .. } | SdkError::RateLimited { .. } => true,
        SdkError::Http { status, .. } => *status >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_never_reach_error_messages() {
        let message = without_quoted(
            "invalid type: string \"kw_live_secretsecret\", expected a sequence at line 1",
        );
        assert!(!message.contains("secretsecret"), "{message}");
        assert!(message.contains("expected a sequence"));
        assert_eq!(
            without_quoted("missing field `name` at line 1"),
            "missing field `name` at line 1"
        );
    }

    #[test]
    fn rows_need_exactly_one_of_secret_and_hash() {
        let both = SourceRow {
            secret: Some("a".into()),
            hash: Some("b".into()),
            name: "n".into(),
            ..SourceRow::default()
        };
        assert!(both.into_imported().is_err());
        let neither = SourceRow {
            name: "n".into(),
            ..SourceRow::default()
        };
        assert!(neither.into_imported().is_err());
    }

    #[test]
    fn keyward_shaped_secrets_with_a_bad_checksum_are_refused() {
        let mut secret = keyward_core::secret::IssuedSecret::generate(
            "acme",
            keyward_core::Environment::Live,
            &mut rand::rngs::OsRng,
        )
        .unwrap()
        .expose()
        .to_owned();
        let last = secret.pop().unwrap();
        secret.push(if last == 'x' { 'y' } else { 'x' });
        let row = SourceRow {
            secret: Some(secret),
            name: "n".into(),
            ..SourceRow::default()
        };
        let refused = row.into_imported().unwrap_err();
        assert!(refused.contains("checksum"), "{refused}");
    }

    #[test]
    fn foreign_secrets_are_hashed_and_marked() {
        let row = SourceRow {
            secret: Some("legacy_AbCdEfGhIjKlMnOpQrSt".into()),
            name: "n".into(),
            ..SourceRow::default()
        };
        let imported = row.into_imported().unwrap();
        assert!(!imported.keyward_format);
        assert_eq!(imported.start, "legacy_AbCd");
        assert_eq!(
            imported.hash,
            KeyHash::of("legacy_AbCdEfGhIjKlMnOpQrSt").to_hex()
        );
    }
}
